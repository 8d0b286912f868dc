"""Big buffers of dispyscheduler's journal, kept as files beside it.

A big buffer in the log itself would be copied again at every compaction of the log,
and read back whole at every start. Here each big buffer is one file, written once
before the record that names it is written and removed once that record's job or
result is gone: a crash in between leaves a file no record names, removed at the next
start.

File names are made here (random hex), never from a program's ids.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import uuid
from collections.abc import Iterable

#: buffers at least this big go to a file of their own
BLOB_MIN = 64 * 1024
_NAME = re.compile(r"[0-9a-f]{32}")


class BlobStore:
    """A private directory of write-once files."""

    def __init__(self, path: str) -> None:
        self.path = path
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise ValueError(f"{path} is not a directory of this user")
        os.chmod(path, 0o700)

    def put(self, data: bytes | bytearray | memoryview) -> str:
        """Keep ``data``; returns its name."""
        name = uuid.uuid4().hex
        fd = os.open(os.path.join(self.path, name),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        return name

    def get(self, name: str) -> bytes:
        """A kept buffer; ValueError for a name this store does not make."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"not a blob name: {name[:40]!r}")
        fd = os.open(os.path.join(self.path, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            parts, got = [], 0
            while got < size:
                part = os.read(fd, size - got)
                if not part:
                    raise ValueError(f"blob {name} is shorter than it was")
                parts.append(part)
                got += len(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)  # b"" if empty
        finally:
            os.close(fd)

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            if _NAME.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.path, name))

    def keep_only(self, names: set[str]) -> None:
        """Remove every file no row names (left by a crash between write and commit)."""
        self.remove(n for n in os.listdir(self.path) if n not in names)
