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


def _wrap(obj: Any, min_size: int, depth: int, memo: dict) -> Any:
    """``obj`` with its big byte strings (itself, or in tuples, lists and dicts up to
    ``depth`` levels down) replaced by stand-ins; ``obj`` itself when there are none.
    ``memo`` keeps one stand-in per string, so a string passed twice is sent once."""
    kind = type(obj)
    if kind is bytes or kind is bytearray:
        if len(obj) < min_size:
            return obj
        out = memo.get(id(obj))
        if out is None:
            out = memo[id(obj)] = _Out(obj)
        return out
    if depth <= 0 or kind not in (tuple, list, dict) or len(obj) > _SEARCH_MAX:
        return obj
    if kind is dict:
        items = {k: _wrap(v, min_size, depth - 1, memo) for k, v in obj.items()}
        return items if any(items[k] is not v for k, v in obj.items()) else obj
    wrapped = [_wrap(v, min_size, depth - 1, memo) for v in obj]
    if all(a is b for a, b in zip(wrapped, obj, strict=True)):
        return obj
    return tuple(wrapped) if kind is tuple else wrapped


def dumps(obj: Any, min_size: int = OOB_MIN, depth: int = 2
          ) -> tuple[bytes, list[memoryview]]:
    """(pickle, out-of-band buffers as byte memoryviews); raises what pickling raises."""
    buffers: list[pickle.PickleBuffer] = []
    data = cloudpickle.dumps(_wrap(obj, min_size, depth, {}), protocol=5,
                             buffer_callback=buffers.append)
    return data, [buf.raw() for buf in buffers]


def loads(data: Any, buffers: list | tuple = ()) -> Any:
    return cloudpickle.loads(data, buffers=buffers)


def split(n: int | None, bufs: list) -> tuple[list, list]:
    """A frame's buffers as (its own, out-of-band ones) by its ``oob`` count."""
    if not isinstance(n, int) or n <= 0 or n > len(bufs):
        return bufs, []
    return bufs[:-n], bufs[-n:]
