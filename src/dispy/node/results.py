"""Results kept on disk until their client acknowledges them.

Every result a job produces is appended to a log before the node reports it (one
``writev`` per loop iteration for all results that came in it), so a node killed at
any moment loses none: after a restart, ``recover_jobs`` (or the reconnecting client)
fetches them. An acknowledgement appends a small "drop" record, with the next results
written or within a second (a node killed in between offers those results again: the
client drops a result it already has, and acknowledges it). The log is rewritten
with only the results still waiting once it has grown past ``COMPACT_AT`` (at once,
when nothing is waiting: it is truncated). No fsync: this guards against the node
process dying (``kill -9``, a crash), not the OS. The daemon stores the opaque buffers
as they came from the job; it never unpickles them. ``--clean`` deletes the log.

A big result (``jobproc.RESULT_FILE_MIN`` bytes and more) is not copied into the log:
its job process wrote it to a file of the result directory beside the log, and the log
keeps that file's name (a FILE record). The daemon removes the file when the result is
acknowledged (disk.py); files no record names (a node killed before it logged one) are
removed when the next run loads the log.

Record: ``!BQ`` kind and body length, then the body. A result's body is ``!I`` and a
JSON of (session id, client name, header, buffer lengths), then the buffers; a file's
the same JSON with the file's name added, and no buffers; a drop's body is a JSON of
(session id, uids). A record cut short by a crash ends the log.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import re
import stat
import struct
from collections.abc import Iterable
from typing import Any

from ..wire.codec import BIG, FULL, from_json, to_json

_REC = struct.Struct("!BQ")
_META = struct.Struct("!I")
RESULT, DROP, FILE = 1, 2, 3
#: how a job process names a result file: its pid, its computation's tag, a count
FILE_NAME = re.compile(r"([1-9][0-9]{0,9})-([0-9a-f]{16})-([1-9][0-9]{0,17})")

log = logging.getLogger("dispy.node")
#: a result file's pages mapped at once (one call, not a fault per page as it is sent),
#: up to this size: a bigger one's faults are spread over its sending, not one long
#: call in the daemon's loop
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
POPULATE_MAX = 64 << 20
COMPACT_AT = 64 << 20
_IOV_MAX = 512


def writev_at(fd: int, pieces: list[Any], offset: int = 0) -> None:
    """Write ``pieces`` at ``offset`` (one positioned write per ``_IOV_MAX`` pieces: no
    seek first, one system call fewer per result). Small ones are joined first: one copy
    of a few hundred bytes costs less than a view of each piece."""
    if len(pieces) <= _IOV_MAX:
        size = sum(map(len, pieces)) if all(type(p) is bytes for p in pieces) else BIG
        if size < BIG:
            data = b"".join(pieces)
            done = 0
            while done < size:
                done += os.pwrite(fd, data[done:] if done else data, offset + done)
            return
    for i in range(0, len(pieces), _IOV_MAX):
        chunk = [memoryview(p).cast("B") for p in pieces[i:i + _IOV_MAX]]
        while chunk:
            n = os.pwritev(fd, chunk, offset)
            offset += n
            while chunk and n >= chunk[0].nbytes:
                n -= chunk[0].nbytes
                chunk.pop(0)
            if chunk and n:
                chunk[0] = chunk[0][n:]


def _open(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def map_result_file(directory: str, name: str, lens: list[int],
                    populate: bool = True) -> list[Any]:
    """The buffers of result file ``name`` (of ``lens`` bytes each), mapped, not read;
    ValueError or OSError when the name, the file or its size is not what it must be,
    or the buffers are over the wire's limits (the client would refuse them)."""
    if not FILE_NAME.fullmatch(name):
        raise ValueError(f"not a result file name: {name[:40]!r}")
    if len(lens) > FULL.max_buffers or any(n > FULL.max_buffer for n in lens):
        raise ValueError(f"result of {len(lens)} buffers, up to {max(lens, default=0)}"
                         " bytes: over the limits of a frame")
    fd = os.open(os.path.join(directory, name),  # (a FIFO must not block the daemon)
                 os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
            raise ValueError(f"result file {name} is not a file of this user's alone")
        if st.st_size != sum(lens):
            raise ValueError(f"result file {name} has {st.st_size} bytes, not {sum(lens)}")
        if not st.st_size:
            return [b"" for _ in lens]
        populate = populate and st.st_size <= POPULATE_MAX
        flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
        try:
            view = memoryview(mmap.mmap(fd, st.st_size, flags=flags, prot=mmap.PROT_READ))
        except OSError:  # (no room to map it, e.g. vm.max_map_count): read it instead
            view = memoryview(_read_all(fd, st.st_size))
    finally:
        os.close(fd)
    bufs, at = [], 0
    for n in lens:
        bufs.append(view[at:at + n])
        at += n
    return bufs


def _read_all(fd: int, size: int) -> bytearray:
    data = bytearray(size)
    with memoryview(data) as view:
        done = 0
        while done < size:
            n = os.preadv(fd, [view[done:]], done)
            if n <= 0:
                raise OSError(f"result file shorter than its {size} bytes")
            done += n
    return data


def remove_result_file(directory: str, name: str) -> None:
    if FILE_NAME.fullmatch(name):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(directory, name))


def remove_result_files(directory: str, keep: set[str], tag: str | None = None,
                        pid: int | None = None) -> None:
    """Remove the result files in ``directory`` but those in ``keep`` (only those of
    computation ``tag``, and of process ``pid``, when given)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = FILE_NAME.fullmatch(name)
        if match is None or name in keep or (tag is not None and match.group(2) != tag) \
                or (pid is not None and int(match.group(1)) != pid):
            continue
        remove_result_file(directory, name)


class ResultStore:
    def __init__(self, path: str, file_dir: str) -> None:
        self.path = path
        #: where the FILE records' files are (a directory beside the log)
        self.file_dir = file_dir
        #: (session id, uid) -> the file of a live FILE record
        self.files: dict[tuple[str, str], str] = {}
        #: files of dropped results, removed once a drop record (or a truncation)
        #: means the log no longer names them
        self._unlink: list[str] = []
        #: (session id, uid) -> (offset, size) of its result record
        self.live: dict[tuple[str, str], tuple[int, int]] = {}
        self.fd = _open(path, os.O_RDWR | os.O_CREAT)
        os.fchmod(self.fd, 0o600)
        self.size = 0
        #: session id -> uids acknowledged and not yet recorded as dropped
        self.dropping: dict[str, list[str]] = {}

    # ---- writing ----------------------------------------------------------------

    def save(self, items: Iterable[tuple[str, str, dict, list, str | None]]) -> None:
        """Keep (session id, client name, header, bufs, result file) results until
        dropped (with a result file: only its name); one write for all, and for the
        drops waiting."""
        pieces, offset = self._drop_pieces()
        for sid, name, header, bufs, file in items:
            lens = [memoryview(b).nbytes for b in bufs]
            if file is not None:
                meta = to_json([sid, name, header, lens, file])
                body = _META.size + len(meta)
                pieces.append(_REC.pack(FILE, body) + _META.pack(len(meta)) + meta)
                self.live[(sid, str(header["uid"]))] = (offset, _REC.size + body)
                self.files[(sid, str(header["uid"]))] = file
                offset += _REC.size + body
                continue
            meta = to_json([sid, name, header, lens])
            body = _META.size + len(meta) + sum(lens)
            pieces += [_REC.pack(RESULT, body) + _META.pack(len(meta)) + meta, *bufs]
            self.live[(sid, str(header["uid"]))] = (offset, _REC.size + body)
            offset += _REC.size + body
        if pieces:
            self._append(pieces, offset)
        self._unlink_dropped()
        if self.size > COMPACT_AT:
            self.compact()

    def drop(self, sid: str, uids: Iterable[str]) -> None:
        """Forget acknowledged results: in memory now, on disk with the next ``save`` or
        ``flush_drops``."""
        gone = [uid for uid in uids if self.live.pop((sid, uid), None) is not None]
        for uid in gone:
            file = self.files.pop((sid, uid), None)
            if file is not None:
                self._unlink.append(file)
        if not gone:
            return
        if not self.live and self.size > (1 << 20):
            self._truncate()
            return
        self.dropping.setdefault(sid, []).extend(gone)

    def flush_drops(self) -> None:
        """Write the drops waiting for a ``save``."""
        pieces, end = self._drop_pieces()
        if pieces:
            self._append(pieces, end)
        self._unlink_dropped()
        if self.size > COMPACT_AT:
            self.compact()

    def _unlink_dropped(self) -> None:
        """Remove the files of dropped results, now that the log says they are."""
        for file in self._unlink:
            remove_result_file(self.file_dir, file)
        self._unlink.clear()

    def _drop_pieces(self) -> tuple[list[Any], int]:
        """The waiting drops as records, and where the log ends after them."""
        pieces: list[Any] = []
        end = self.size
        for sid, gone in self.dropping.items():
            body = to_json([sid, gone])
            pieces += [_REC.pack(DROP, len(body)), body]
            end += _REC.size + len(body)
        self.dropping.clear()
        return pieces, end

    def _append(self, pieces: list[Any], end: int) -> None:
        writev_at(self.fd, pieces, self.size)
        self.size = end

    def _truncate(self) -> None:
        os.ftruncate(self.fd, 0)
        self.size = 0
        self.dropping.clear()
        self._unlink_dropped()

    def compact(self) -> None:
        """Rewrite the log with only the results still waiting (atomic rename)."""
        tmp = self.path + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        out = _open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        live, pos = {}, 0
        try:
            for key, (offset, size) in sorted(self.live.items(), key=lambda kv: kv[1][0]):
                data = os.pread(self.fd, size, offset)
                writev_at(out, [data], pos)
                live[key] = (pos, size)
                pos += size
        finally:
            os.close(out)
        os.replace(tmp, self.path)
        os.close(self.fd)
        self.fd = _open(self.path, os.O_RDWR)
        self.live, self.size = live, pos
        self.dropping.clear()  # only what is live was copied
        self._unlink_dropped()

    # ---- reading (at start) -------------------------------------------------------

    def load(self) -> dict[str, tuple[str, list[tuple[dict, list[Any], str | None]]]]:
        """Everything kept: session id -> (client name, [(header, bufs, result file)]);
        the log is then rewritten with just those, and result files it does not name
        are removed."""
        results: dict[tuple[str, str], tuple[str, dict, list[Any], int, int]] = {}
        files: dict[tuple[str, str], tuple[str, list[int]]] = {}
        pos = 0
        end = os.fstat(self.fd).st_size
        while pos + _REC.size <= end:
            kind, body = _REC.unpack(os.pread(self.fd, _REC.size, pos))
            if pos + _REC.size + body > end:
                break  # cut short by a crash
            data = os.pread(self.fd, body, pos + _REC.size)
            try:
                if kind == RESULT:
                    (mlen,) = _META.unpack_from(data)
                    sid, name, header, lens = from_json(data[_META.size:_META.size + mlen])
                    bufs, at = [], _META.size + mlen
                    for n in lens:
                        bufs.append(data[at:at + n])
                        at += n
                    results[(sid, str(header["uid"]))] = (name, header, bufs, pos,
                                                          _REC.size + body)
                    files.pop((sid, str(header["uid"])), None)
                elif kind == FILE:
                    (mlen,) = _META.unpack_from(data)
                    sid, name, header, lens, file = from_json(
                        data[_META.size:_META.size + mlen])
                    key = (sid, str(header["uid"]))
                    results[key] = (name, header, [], pos, _REC.size + body)
                    files[key] = (str(file), lens)
                elif kind == DROP:
                    sid, uids = from_json(data)
                    for uid in uids:
                        results.pop((sid, uid), None)
                        files.pop((sid, uid), None)
                else:
                    break
            except (ValueError, KeyError, TypeError, struct.error):
                break
            pos += _REC.size + body
        self.size = pos
        named: dict[tuple[str, str], str] = {}
        for key, (file, lens) in files.items():
            if key not in results:
                continue  # dropped after it was written
            try:
                results[key][2].extend(map_result_file(self.file_dir, file, lens,
                                                       populate=False))
                named[key] = file
            except (ValueError, OSError) as exc:  # (removed once acknowledged: see drop)
                log.warning("result of job %s is lost: %s", key[1], exc)
                del results[key]
        self._remove_unnamed(set(named.values()))
        self.files = named
        self.live = {key: (r[3], r[4]) for key, r in results.items()}
        out: dict[str, tuple[str, list]] = {}
        for key, (name, header, bufs, _, _) in results.items():
            out.setdefault(key[0], (name, []))[1].append((header, bufs, named.get(key)))
        if self.live:
            self.compact()
        else:
            self._truncate()
        return out

    def _remove_unnamed(self, keep: set[str]) -> None:
        """Remove result files no record names (a job process wrote one, the node was
        killed before its log named it)."""
        remove_result_files(self.file_dir, keep)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.flush_drops()
        with contextlib.suppress(OSError):
            os.close(self.fd)
