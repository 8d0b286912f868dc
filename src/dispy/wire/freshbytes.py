"""A new ``bytes`` object that a socket read fills in place.

A big buffer of a frame (an 8 MB argument or result) used to be received into a
``bytearray`` and copied into ``bytes`` when it was unpickled: one more pass over it,
and one more fresh allocation whose pages fault in, in every process it crosses. Here
the receiver allocates the ``bytes`` itself (uninitialised, as CPython does for every
new ``bytes``) and writes into it through a view of its storage, before anybody else
holds it; unpickling an out-of-band ``bytes`` then takes the buffer as it is
(``oob._as_bytes``).

Only the frame parser writes through the view, only while the object is not yet
shared (its hash is not computed until it is complete). Where the C API is not there
(an interpreter other than CPython), a ``bytearray`` is used instead.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

_new: Any
try:
    if sys.implementation.name != "cpython":  # (elsewhere id() is no address)
        raise AttributeError("not CPython")
    _new = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new.restype = ctypes.py_object
    _new.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    #: where a bytes object's characters start (``ob_sval``): its basic size includes
    #: the one byte of the terminating NUL
    _DATA = bytes.__basicsize__ - 1
except (AttributeError, ValueError):  # pragma: no cover (not CPython)
    _new = None


def fresh(size: int) -> tuple[bytes | bytearray, memoryview]:
    """(a new ``bytes`` of ``size`` bytes, a writable view of all of them). Its content
    is undefined until the view has been filled; the view keeps the object alive."""
    if _new is None or size <= 1:  # (sizes 0 and 1 are shared singletons)
        buf = bytearray(size)
        return buf, memoryview(buf)
    obj = _new(None, size)
    array = (ctypes.c_char * size).from_address(id(obj) + _DATA)
    array.owner = obj  # type: ignore[attr-defined]  # (a view never outlives its bytes)
    return obj, memoryview(array).cast("B")
