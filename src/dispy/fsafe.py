"""Local files a daemon keeps for its peers, kept where they belong.

Daemons keep a tree under a shared directory (the system temp dir by default), and
peers name things in it: computation ids, client ids, job uids, file names. Three
rules, in one place for dispynode and dispyscheduler:

- ids from peers are checked against a fixed alphabet (``check_id``) before they name
  anything on disk, and every joined path must stay inside its root (``safe_join``);
- the tree is created 0700 and refused if another user owns it or can write to it
  (``private_tree``): another local user could otherwise plant it, or symlinks in it;
- files are opened and removed walking the tree with directory descriptors and
  ``O_NOFOLLOW`` (``open_beneath``, ``remove_beneath``): a symlink in it is never
  followed, so nothing outside the tree is written or deleted through one.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from typing import Protocol

#: ids peers choose (client ids, computation ids, job uids): letters, digits, ``_``,
#: ``-`` and ``.`` (not first, so never ``.`` or ``..``), at most 64 characters
ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW_DIR = _DIR_FLAGS | os.O_NOFOLLOW


class UnsafePath(ValueError):
    """A path or id that would leave its root, or a tree another user could change."""


# ---- pure checks ----------------------------------------------------------------------


def valid_id(value: object) -> bool:
    """Whether a peer's id may name a file or directory."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check_id(value: object, what: str) -> str:
    """``value`` when it is a valid id, else UnsafePath naming ``what`` it was."""
    if not valid_id(value):
        shown = repr(value)[:80]
        raise UnsafePath(f"invalid {what} {shown}: ids are 1-64 letters, digits, '_', '-'"
                         " or '.' (not first)")
    return value  # type: ignore[return-value]


def relative_parts(*parts: object) -> list[str]:
    """The components of ``parts`` joined as one relative path ('\\' counts as '/'),
    with '.' and 'x/..' folded; UnsafePath if it is empty, absolute or climbs out."""
    texts = []
    for part in parts:
        if not isinstance(part, str) or not part or "\x00" in part:
            raise UnsafePath(f"invalid file name {part!r}"[:120])
        text = part.replace("\\", "/")
        if text.startswith("/"):
            raise UnsafePath(f"path {part!r} is absolute"[:160])
        texts.append(text)
    joined = "/".join(texts)
    out: list[str] = []
    for name in joined.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not out:
                raise UnsafePath(f"path {joined!r} climbs out of its directory"[:160])
            out.pop()
        else:
            out.append(name)
    if not out:
        raise UnsafePath(f"path {joined!r} names no file"[:160])
    return out


def safe_join(root: str, *parts: object) -> str:
    """``root/parts...``, refusing absolute paths and anything that leaves ``root``."""
    return os.path.join(root, *relative_parts(*parts))


def inside(root: str, path: str) -> list[str]:
    """The components of ``path`` below ``root``; UnsafePath when it is not below it."""
    rel = os.path.relpath(os.path.normpath(path), os.path.normpath(root))
    return relative_parts(rel)


def tree_problem(st: os.stat_result, uid: int) -> str | None:
    """Why a directory of a daemon's tree cannot be trusted (None when it can): another
    user owns it, or others may write to it (they could swap files or plant links)."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != uid:
        return f"is owned by uid {st.st_uid}, not by this daemon's user (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def prefix_problem(st: os.stat_result) -> str | None:
    """Why a directory cannot hold a daemon's tree: others may write to it without the
    sticky bit (as /tmp has), so they could rename the tree and put their own there."""
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return ("is writable by others and not sticky: another user could replace the"
                " daemon's directory in it")
    return None


# ---- the tree ---------------------------------------------------------------------------


def _open_dir(name: str, dir_fd: int, shown: str) -> int:
    try:
        return os.open(name, _NOFOLLOW_DIR, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(f"{shown} is a symbolic link or not a directory;"
                             " it is not followed") from None
        raise


def private_tree(prefix: str, names: Sequence[str], uid: int | None = None) -> str:
    """Create (0700) or check ``prefix/names...``; returns its path.

    Each directory made here must be this user's and writable by nobody else; one
    found wider open but ours is narrowed to 0700. UnsafePath says what is wrong."""
    uid = os.geteuid() if uid is None else uid
    try:
        os.makedirs(prefix, 0o700, exist_ok=True)  # a prefix given but not there yet
        fd = os.open(prefix, _DIR_FLAGS)
    except OSError as exc:
        raise UnsafePath(f"{prefix}: {exc.strerror}") from None
    path = prefix
    try:
        problem = prefix_problem(os.fstat(fd))
        if problem:
            raise UnsafePath(f"{prefix} {problem}")
        for name in names:
            path = os.path.join(path, name)
            try:
                os.mkdir(name, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                sub = _open_dir(name, fd, path)
            except OSError as exc:
                raise UnsafePath(f"{path}: {exc.strerror}") from None
            os.close(fd)
            fd = sub
            st = os.fstat(fd)
            problem = tree_problem(st, uid)
            if problem:
                raise UnsafePath(f"{path} {problem}; remove it or use another"
                                 " --dest_path_prefix")
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def _walk(root: str, parts: list[str], makedirs: bool) -> int:
    """A descriptor of ``root/parts...`` reached without following a symlink below root."""
    fd = os.open(root, _DIR_FLAGS)
    shown = root
    try:
        for name in parts:
            shown = os.path.join(shown, name)
            if makedirs:
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            sub = _open_dir(name, fd, shown)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


def makedirs_beneath(root: str, path: str) -> None:
    """``os.makedirs(path)`` (0700) for a ``path`` inside ``root``, following no link."""
    if os.path.normpath(path) == os.path.normpath(root):
        os.makedirs(root, 0o700, exist_ok=True)
        return
    os.makedirs(root, 0o700, exist_ok=True)
    os.close(_walk(root, inside(root, path), makedirs=True))


def open_beneath(root: str, path: str, flags: int, mode: int = 0o600,
                 makedirs: bool = False) -> int:
    """``os.open`` of a ``path`` inside ``root`` with no symlink followed on the way or
    at the end (``makedirs`` creates missing directories, 0700)."""
    parts = inside(root, path)
    fd = _walk(root, parts[:-1], makedirs)
    try:
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{path} is a symbolic link; it is not followed") from None
        raise
    finally:
        os.close(fd)


def _remove_at(dir_fd: int, name: str) -> None:
    st = os.lstat(name, dir_fd=dir_fd)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, _NOFOLLOW_DIR, dir_fd=dir_fd)
    try:
        for entry in list(os.scandir(fd)):
            _remove_at(fd, entry.name)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def remove_beneath(root: str, path: str, only_empty: bool = False) -> bool:
    """Remove a file or a whole directory ``path`` inside ``root`` (an empty directory
    only, with ``only_empty``) without following a symlink: a link is removed, never
    what it points to. True when it is gone; errors are swallowed (best effort)."""
    try:
        parts = inside(root, path)
        fd = _walk(root, parts[:-1], makedirs=False)
    except (OSError, UnsafePath):
        return False
    try:
        if only_empty:
            os.rmdir(parts[-1], dir_fd=fd)
        else:
            _remove_at(fd, parts[-1])
    except FileNotFoundError:
        pass
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def clear_tree(root: str, keep: Sequence[str] = ()) -> None:
    """Remove everything in ``root`` but the names in ``keep`` (``--clean``)."""
    for entry in list(os.scandir(root)):
        if entry.name not in keep:
            remove_beneath(root, entry.path)


def private_file(path: str) -> None:
    """Create ``path`` 0600 if missing, or narrow it to 0600 when it is ours; refuse a
    symlink or anything but a plain file (UnsafePath). SQLite gives its -wal and -shm
    files the mode of the database, so this keeps them private too."""
    _narrow(path, os.O_RDWR | os.O_CREAT)
    for extra in (path + "-wal", path + "-shm"):  # left by an earlier, wider-open run
        try:
            _narrow(extra, os.O_RDONLY)
        except FileNotFoundError:
            continue


def _narrow(path: str, flags: int) -> None:
    """Open ``path`` without following a symlink; a plain file of ours becomes 0600."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{path} is a symbolic link; it is not followed") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{path} is not a regular file")
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


# ---- uploads ------------------------------------------------------------------------------


def _nbytes(buf: object) -> int:
    return memoryview(buf).nbytes  # type: ignore[arg-type]


#: A file being received is written under its name plus this, and renamed when complete.
PART_SUFFIX = ".dispy-part"


class Chunk(Protocol):
    """What a "file" frame says of its chunk (wire/messages.File)."""

    @property
    def path(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def final(self) -> bool: ...

    @property
    def mode(self) -> int: ...

    @property
    def mtime(self) -> float | None: ...

    @property
    def mtime_ns(self) -> int | None: ...


def write_chunk(root: str, path: str, chunk: Chunk, bufs: list, limit: int = 0,
                owner: str = "node") -> bool:
    """Write one chunk of a "file" frame at its offset into ``path`` (inside ``root``);
    True when the file is complete (then it gets the sender's permission bits, without
    set-id bits, and exact mtime: the file cache compares it).

    ``limit`` (max_file_size, 0 for none) bounds both the size the sender declares and
    the bytes it really sends: a chunk that would take the file past it is refused
    (ValueError) and the partial file removed."""
    offset = chunk.offset
    if offset < 0:
        raise ValueError(f"{chunk.path!r}: negative offset")
    end = offset + sum(_nbytes(b) for b in bufs)
    declared = chunk.size
    size = max(declared, end)
    part = path + PART_SUFFIX  # readers (job processes) never see a file half written
    if limit and size > limit:
        remove_beneath(root, part)
        what = "file of" if size == declared else "file sent with"
        raise ValueError(f"{chunk.path}: {what} {size} bytes is over the {owner}'s"
                         f" max_file_size of {limit} bytes")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if offset == 0 else 0)
    fd = open_beneath(root, part, flags, 0o600, makedirs=True)
    with os.fdopen(fd, "wb") as fh:
        fh.seek(offset)
        for buf in bufs:
            fh.write(buf)
        fh.flush()
        if not chunk.final:
            return False
        os.fchmod(fd, chunk.mode & 0o777)
        if chunk.mtime_ns is not None:
            os.utime(fd, ns=(chunk.mtime_ns, chunk.mtime_ns))
        elif chunk.mtime is not None:
            os.utime(fd, (chunk.mtime, chunk.mtime))
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            os.unlink(part)
            raise UnsafePath(f"{chunk.path!r}: a symbolic link is in the way")
    except FileNotFoundError:
        pass
    os.replace(part, path)  # both names in a directory open_beneath checked
    return True
