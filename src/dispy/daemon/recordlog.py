"""Append-only logs of records: the client's recover file and dispyscheduler's journal.

A record is a ``!I`` length and a ``marshal``-ed tuple of plain values (``marshal`` runs
no code; each log is its owner's private file). A record cut short by a crash ends the
log: ``records`` stops there and the owner cuts it off. No fsync: a log guards against
its process dying, not the OS.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import struct
from collections.abc import Iterator

_LEN = struct.Struct("!I")


def record(rec: tuple) -> bytes:
    data = marshal.dumps(rec)
    return _LEN.pack(len(data)) + data


def records(data: bytes, pos: int = 0) -> Iterator[tuple[tuple, int]]:
    """(record, offset after it) for each whole record of ``data`` from ``pos``, up to
    the first one cut short or not a non-empty tuple."""
    while pos + _LEN.size <= len(data):
        (size,) = _LEN.unpack_from(data, pos)
        end = pos + _LEN.size + size
        if end > len(data):
            return  # cut short by a crash
        try:
            rec = marshal.loads(data[pos + _LEN.size:end])
        except (EOFError, ValueError, TypeError):
            return
        if not isinstance(rec, tuple) or not rec:
            return
        yield rec, end
        pos = end


def append(fd: int, data: bytes, at: int) -> int:
    """Write ``data`` at offset ``at`` of ``fd`` (one pwrite, more if it is cut short);
    returns the new end."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, at)
        at += n
        view = view[n:]
    return at


def rewrite(path: str, data: bytes) -> int:
    """Replace the file at ``path`` by ``data`` (0600, atomic rename, never through a
    symlink); returns the new file, open and locked (flock) like the old one."""
    tmp = path + ".new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o600)
    try:
        append(out, data, 0)
    finally:
        os.close(out)
    fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(tmp, path)
    return fd
