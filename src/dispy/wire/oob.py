"""Pickles whose big ``bytes``/``bytearray`` values travel beside them, not inside.

A pickle copies every byte string into itself, and unpickling copies it out again. For
an 8 MB argument or result that is two copies per hop; here such values become
out-of-band buffers (pickle protocol 5): they go into the frame as buffers of their
own and the receiver's frame buffer (``bytes``) becomes the value itself, uncopied.
The frame header's ``oob`` field counts these buffers; they are the frame's last ones.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

#: Byte strings at least this long go out of band (smaller ones are cheaper inline).
OOB_MIN = 64 * 1024


def _as_bytes(buf: Any) -> bytes:
    """Unpickles an out-of-band ``bytes``: the frame buffer itself when it is bytes."""
    return buf if type(buf) is bytes else bytes(buf)


def _as_bytearray(buf: Any) -> bytearray:
    return bytearray(buf)


class _Out:
    """Stands for a big byte string while pickling: pickled as an out-of-band buffer.
    (The pickler handles ``bytes`` itself, before any override, hence the stand-in.)"""

    __slots__ = ("value",)

    def __init__(self, value: bytes | bytearray) -> None:
        self.value = value

    def __reduce_ex__(self, protocol: Any) -> Any:
        fn = _as_bytes if type(self.value) is bytes else _as_bytearray
        return fn, (pickle.PickleBuffer(self.value),)


#: Containers longer than this are not searched (a long list of small values is common
#: and searching it would cost more than it saves).
_SEARCH_MAX = 64


#: Values pickled the same by ``pickle`` and ``cloudpickle`` (no code, no classes).
PLAIN_SCALARS = frozenset({int, float, str, bool, type(None), complex})
_CONTAINERS = frozenset({tuple, list, dict})


class _Walk:
    """What ``_wrap`` found: a stand-in per big byte string (so a string passed twice is
    sent once), and whether everything seen was plain data."""

    __slots__ = ("memo", "plain")

    def __init__(self) -> None:
        self.memo: dict[int, _Out] = {}
        self.plain = True


def _wrap(obj: Any, min_size: int, depth: int, walk: _Walk) -> Any:
    """``obj`` with its big byte strings (itself, or in tuples, lists and dicts up to
    ``depth`` levels down) replaced by stand-ins; ``obj`` itself when there are none."""
    kind = type(obj)
    if kind in PLAIN_SCALARS:
        return obj
    if kind is bytes or kind is bytearray:
        if len(obj) < min_size:
            return obj
        out = walk.memo.get(id(obj))
        if out is None:
            out = walk.memo[id(obj)] = _Out(obj)
        return out
    if depth <= 0 or kind not in _CONTAINERS or len(obj) > _SEARCH_MAX:
        walk.plain = False
        return obj
    if kind is dict:
        changed: dict | None = None
        for k, v in obj.items():
            if type(k) not in PLAIN_SCALARS:
                walk.plain = False
            w = _wrap(v, min_size, depth - 1, walk)
            if w is not v:
                if changed is None:
                    changed = dict(obj)
                changed[k] = w
        return obj if changed is None else changed
    out_list: list | None = None
    for i, v in enumerate(obj):
        w = _wrap(v, min_size, depth - 1, walk)
        if w is not v:
            if out_list is None:
                out_list = list(obj)
            out_list[i] = w
    if out_list is None:
        return obj
    return tuple(out_list) if kind is tuple else out_list


def dumps(obj: Any, min_size: int = OOB_MIN, depth: int = 2
          ) -> tuple[bytes, list[memoryview]]:
    """(pickle, out-of-band buffers as byte memoryviews); raises what pickling raises.
    Plain data (numbers, strings, bytes in small tuples, lists and dicts: most jobs'
    arguments and results) is pickled by ``pickle``, a quarter of cloudpickle's cost;
    anything else by ``cloudpickle``, which ships code by value."""
    buffers: list[pickle.PickleBuffer] = []
    walk = _Walk()
    wrapped = _wrap(obj, min_size, depth, walk)
    pickler = pickle.dumps if walk.plain else cloudpickle.dumps
    data = pickler(wrapped, protocol=5, buffer_callback=buffers.append)
    return data, [buf.raw() for buf in buffers]


def loads(data: Any, buffers: list | tuple = ()) -> Any:
    return cloudpickle.loads(data, buffers=buffers)


def split(n: int | None, bufs: list) -> tuple[list, list]:
    """A frame's buffers as (its own, out-of-band ones) by its ``oob`` count."""
    if not isinstance(n, int) or n <= 0 or n > len(bufs):
        return bufs, []
    return bufs[:-n], bufs[-n:]
