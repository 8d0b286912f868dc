"""Out-of-band pickling of big byte strings: same values and types, fewer copies."""

import os

from dispy.client import shipping
from dispy.wire import oob

BIG = os.urandom(oob.OOB_MIN + 1)


def roundtrip(obj, **kw):
    data, bufs = oob.dumps(obj, **kw)
    # the receiver gets each buffer as the bytes of a frame
    return oob.loads(data, [bytes(b) for b in bufs]), bufs


def test_big_bytes_and_bytearray_go_out_of_band_and_keep_their_type():
    value, bufs = roundtrip(((BIG, bytearray(BIG), 3), {"k": BIG}))
    (a, b, n), kw = value
    assert type(a) is bytes and a == BIG
    assert type(b) is bytearray and b == BIG
    assert n == 3 and kw["k"] == BIG
    assert len(bufs) == 2  # the same string passed twice is sent once


def test_frame_buffer_becomes_the_value_without_a_copy():
    data, bufs = oob.dumps(BIG)
    frame = [bytes(b) for b in bufs]
    assert oob.loads(data, frame) is frame[0]


def test_small_values_and_long_containers_stay_inline():
    assert roundtrip(b"x" * 10)[1] == []
    assert roundtrip(list(range(1000)))[1] == []
    assert roundtrip([BIG] * 100) == ([BIG] * 100, [])  # not searched: inline
    value, bufs = roundtrip({"a": [BIG]})
    assert value == {"a": [BIG]} and len(bufs) == 1


def test_split_by_header():
    assert oob.split(2, [1, 2, 3, 4]) == ([1, 2], [3, 4])
    assert oob.split(None, [1, 2]) == ([1, 2], [])
    assert oob.split(5, [1]) == ([1], [])  # malformed count: ignored
    assert oob.split("x", [1])  # type: ignore[arg-type] == ([1], [])


def test_job_arguments_out_of_band_only_when_too_big_for_the_recover_file():
    data, big = shipping.pack_job_args((BIG,), {})
    assert big is None  # small enough to be kept in the recover file as one pickle
    huge = os.urandom(shipping.ARGS_OOB_MIN)
    data, big = shipping.pack_job_args((huge,), {})
    assert len(big) == 1 and len(data) < 1000
    assert oob.loads(data, [bytes(b) for b in big]) == ((huge,), {})


def test_plain_data_by_pickle_code_by_value():
    """Plain data needs no cloudpickle (same bytes as pickle); code and instances of
    classes that are not importable still go by value."""
    import pickle

    plain = ((1, 2.5, "s", None, True, b"b"), {"k": [1, {"n": 3}]})
    data, bufs = oob.dumps(plain)
    assert data == pickle.dumps(plain, protocol=5) and bufs == []

    class Local:
        def __init__(self, n):
            self.n = n

    def add(x):
        return x + 1

    value, _ = roundtrip(((lambda x: 2 * x, add, Local(4)), {"f": add}))
    (double, inc, obj), kw = value
    assert double(2) == 4 and inc(1) == 2 and obj.n == 4 and kw["f"](2) == 3


def test_subclasses_of_plain_types_keep_their_class():
    import collections

    Point = collections.namedtuple("Point", "x y")  # noqa: PYI024
    value, _ = roundtrip([Point(1, 2), {"p": Point(3, BIG)}])
    assert type(value[0]).__name__ == "Point" and value[0].x == 1
    assert value[1]["p"].y == BIG
