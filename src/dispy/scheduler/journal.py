"""dispyscheduler's journal: what a restarted scheduler needs so no program loses a job.

An append-only log in the scheduler's private directory (mode 0600, locked while a
scheduler uses it). It keeps the scheduler's id (so its programs reconnect to "the same"
scheduler), the programs' sessions, their computations as they sent them, every job as
it arrived (until it ends), where each job was sent (with the node session of that run
of the scheduler, to fetch its result after a restart), and every result until the
program acknowledges it.

Changes are queued and written by ``flush`` in one ``pwrite``, which the engine calls
before it sends jobs to nodes and before it acknowledges results to nodes: a job is on
disk before any node runs it, and a result before its node may forget it. Only a crash
of the scheduler itself is covered (no fsync: the OS keeps what was written). Each
record is a length and a ``marshal``-ed tuple of plain values; a record cut short by a
crash ends the log, and the log is rewritten with only what is live when it holds
``COMPACT_FACTOR`` times more records (and at start). Arguments and results stay the
bytes the programs and nodes sent: nothing here is unpickled (``marshal`` reads only
plain values, and only this scheduler's own file).
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

from .. import fsafe
from ..daemon import recordlog
from ..wire.codec import from_json, to_json_kept
from .blobs import BLOB_MIN, BlobStore

log = logging.getLogger("dispy.scheduler")

#: the log is rewritten when it holds this many times more records than are live
COMPACT_FACTOR = 4
COMPACT_MIN = 50_000


def _text(value: Any) -> bytes:
    """A header as the journal keeps it (orjson: a job's header is written per job)."""
    return to_json_kept(value)


#: a length with this bit set: the bytes are the name of a file in the BlobStore
_EXTERNAL = 1 << 63


def pack(bufs: list | tuple, blobs: BlobStore | None = None) -> tuple[bytes, list[str]]:
    """Several byte strings as one blob: a 4-byte count, 8-byte lengths, the bytes;
    with ``blobs``, big ones are written there and only their names kept. Returns the
    blob and the names of the files it refers to."""
    lens, body, names = [], [], []
    for b in bufs:
        n = memoryview(b).nbytes
        if blobs is not None and n >= BLOB_MIN:
            name = blobs.put(b)
            names.append(name)
            lens.append((_EXTERNAL | len(name)).to_bytes(8, "big"))
            body.append(name.encode())
        else:
            lens.append(n.to_bytes(8, "big"))
            body.append(bytes(b))
    return b"".join([len(bufs).to_bytes(4, "big"), *lens, *body]), names


def unpack(blob: bytes, blobs: BlobStore | None = None) -> tuple[list[bytes], list[str]]:
    """The inverse of ``pack``: (the byte strings, the files read); ValueError for a
    blob it did not make (or a file it names that is missing)."""
    count = int.from_bytes(blob[:4], "big")
    lengths = [int.from_bytes(blob[4 + 8 * i:12 + 8 * i], "big") for i in range(count)]
    pos, out, names = 4 + 8 * count, [], []
    for n in lengths:
        size = n & ~_EXTERNAL
        piece = blob[pos:pos + size]
        pos += size
        if n & _EXTERNAL:
            if blobs is None:
                raise ValueError("a packed list naming a file, and no files")
            name = piece.decode("ascii", errors="replace")
            try:
                piece = blobs.get(name)
            except OSError as exc:
                raise ValueError(f"file {name} of the journal: {exc}") from None
            names.append(name)
        out.append(piece)
    if pos != len(blob):
        raise ValueError("not a packed list of byte strings")
    return out, names


@dataclass
class SavedJob:
    sid: str
    uid: str
    ccid: str
    header: dict
    bufs: list[bytes]
    files: list[tuple[str, str]]
    #: where it was sent (boot, ip, port, node cid, node uid), or None if it was queued
    sent: tuple[int, str, int, str, str] | None


@dataclass
class SavedState:
    """What a restarted scheduler finds."""

    sessions: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    computations: list[tuple[str, str, dict, list[bytes]]] = field(default_factory=list)
    jobs: list[SavedJob] = field(default_factory=list)
    results: list[tuple[str, str, dict, list[bytes]]] = field(default_factory=list)
    #: boot -> (client id, session key) the scheduler had towards its nodes then
    boots: dict[int, tuple[str, str]] = field(default_factory=dict)


@dataclass
class _Live:
    """What the log says, replayed (the records as tuples of plain values)."""

    meta: dict[str, str] = field(default_factory=dict)
    boots: dict[int, tuple[str, str]] = field(default_factory=dict)
    sessions: dict[str, tuple] = field(default_factory=dict)
    #: (sid, ccid) -> (header, blob)
    computations: dict[tuple[str, str], tuple] = field(default_factory=dict)
    #: (sid, uid) -> [ccid, header, blob, files, boot, ip, port, node cid, node uid]
    jobs: dict[tuple[str, str], list] = field(default_factory=dict)
    #: (sid, uid) -> (header, blob)
    results: dict[tuple[str, str], tuple] = field(default_factory=dict)

    def apply(self, rec: tuple) -> None:
        tag = rec[0]
        if tag == "j":
            self.jobs[(rec[1], rec[2])] = list(rec[3:])
        elif tag == "w":
            row = self.jobs.get((rec[1], rec[2]))
            if row is not None:
                row[4:] = rec[3:]
        elif tag == "e":
            key = (rec[1], rec[2])
            self.jobs.pop(key, None)
            self.results[key] = (rec[3], rec[4])
        elif tag == "a":
            for uid in rec[2:]:
                self.results.pop((rec[1], uid), None)
        elif tag == "s":
            self.sessions[rec[1]] = tuple(rec[1:])
        elif tag == "S":
            sid = rec[1]
            self.sessions.pop(sid, None)
            for table in (self.computations, self.jobs, self.results):
                for key in [k for k in table if k[0] == sid]:
                    del table[key]
        elif tag == "c":
            self.computations[(rec[1], rec[2])] = (rec[3], rec[4])
        elif tag == "C":
            sid, ccid = rec[1], rec[2]
            self.computations.pop((sid, ccid), None)
            for key in [k for k, row in self.jobs.items() if k[0] == sid and row[0] == ccid]:
                del self.jobs[key]
        elif tag == "m":
            self.meta[rec[1]] = rec[2]
        elif tag == "b":
            self.boots[rec[1]] = (rec[2], rec[3])
        elif tag == "B":
            keep = set(rec[1:])
            self.boots = {b: v for b, v in self.boots.items() if b in keep}
        else:
            raise ValueError(f"unknown record {tag!r}")

    def drop_orphans(self) -> None:
        """Rows of sessions that ended (a result journaled after its session ended)."""
        for table in (self.computations, self.jobs, self.results):
            for key in [k for k in table if k[0] not in self.sessions]:
                del table[key]

    def records(self) -> list[tuple]:
        """The records that make this state."""
        out: list[tuple] = [("m", k, v) for k, v in self.meta.items()]
        out += [("b", b, c, k) for b, (c, k) in self.boots.items()]
        out += [("s", *row) for row in self.sessions.values()]
        out += [("c", *key, *row) for key, row in self.computations.items()]
        # results before jobs: a result record drops the job row of its uid on replay
        out += [("e", *key, *row) for key, row in self.results.items()]
        out += [("j", *key, *row) for key, row in self.jobs.items()]
        return out


def _replay(data: bytes) -> tuple[_Live, int, int]:
    """(the state, records, end of the last whole record) of a log's bytes."""
    live, count, end = _Live(), 0, 0
    for rec, after in recordlog.records(data):
        try:
            live.apply(rec)
        except (ValueError, TypeError, IndexError):
            break
        count, end = count + 1, after
    return live, count, end


class SchedulerJournal:
    """The journal; used on the scheduler's loop only."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            fsafe.private_file(path)
            self.fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise ValueError(f"journal {path} cannot be used: {exc}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise ValueError(f"journal {path} is in use by another dispyscheduler") from None
        try:
            self.blobs = BlobStore(path + ".blobs")
        except (OSError, ValueError) as exc:
            os.close(self.fd)
            raise ValueError(f"journal {path} cannot be used: {exc}") from None
        #: records queued for the next flush
        self._ops: list[bytes] = []
        #: (table, sid, ccid or uid) -> (ccid, files its row names)
        self._files: dict[tuple[str, str, str], tuple[str, list[str]]] = {}
        #: files whose rows are deleted by the queued changes: removed after the commit
        self._unlink: list[str] = []
        self.boot = 0
        #: the log's size and records (compacted at start: a cut record is cut off),
        #: and how many records were live at the last compaction
        self.size = self.records = self._compacted = 0
        #: what the log holds (and the records queued), replayed: kept from the start;
        #: its meta and boots are the scheduler's id and its runs
        self._live = self._compact()

    # ---- the file ------------------------------------------------------------------

    def _read(self) -> tuple[_Live, int, int]:
        size = os.fstat(self.fd).st_size
        data = os.pread(self.fd, size, 0) if size else b""
        return _replay(data)

    def _compact(self, live: _Live | None = None) -> _Live:
        """Rewrite the log with only what is live (atomic rename); returns it. ``live``:
        what the log holds, kept in memory since the start (else read from the file)."""
        if live is None:
            live, _, _ = self._read()
        live.drop_orphans()
        records = live.records()
        data = b"".join(recordlog.record(rec) for rec in records)
        fd = recordlog.rewrite(self.path, data)
        os.close(self.fd)
        self.fd, self.size = fd, len(data)
        self.records = self._compacted = len(records)
        return live

    def _write(self, pieces: list[bytes]) -> None:
        self.size = recordlog.append(self.fd, b"".join(pieces), self.size)
        self.records += len(pieces)

    def _op(self, rec: tuple) -> None:
        """Queue a record for the next flush; the state in memory follows it now (a
        compaction writes that state instead of reading the whole log back)."""
        self._ops.append(recordlog.record(rec))
        self._live.apply(rec)

    def _write_now(self, rec: tuple) -> None:
        self._write([recordlog.record(rec)])
        self._live.apply(rec)

    # ---- start -------------------------------------------------------------------------

    def scheduler_id(self) -> str:
        """The scheduler's id, the same across restarts (its programs reconnect to it)."""
        sid = self._live.meta.get("scheduler_id")
        if sid is None:
            sid = uuid.uuid4().hex
            self._write_now(("m", "scheduler_id", sid))
        return sid

    def load(self) -> SavedState:
        """What the log holds (what was flushed), as a restart reads it."""
        live, _, _ = self._read()
        live.drop_orphans()
        state = SavedState()
        state.boots = dict(live.boots)
        state.sessions = list(live.sessions.values())
        self._files.clear()
        for (sid, ccid), (header, blob) in live.computations.items():
            state.computations.append((sid, ccid, from_json(header),
                                       self._unpack("computations", sid, ccid, ccid, blob)))
        for (sid, uid), row in live.jobs.items():
            ccid, header, blob, files, boot, ip, port, ncid, nuid = row
            sent = (boot, ip, port, ncid, nuid) if ip is not None else None
            state.jobs.append(SavedJob(sid, uid, ccid, from_json(header),
                                       self._unpack("jobs", sid, uid, ccid, blob),
                                       [tuple(f) for f in from_json(files)], sent))
        for (sid, uid), (header, blob) in live.results.items():
            state.results.append((sid, uid, from_json(header),
                                  self._unpack("results", sid, uid, "", blob)))
        self.blobs.keep_only({n for _, names in self._files.values() for n in names})
        return state

    def _unpack(self, table: str, sid: str, key: str, ccid: str, blob: bytes) -> list[bytes]:
        bufs, names = unpack(blob, self.blobs)
        if names:
            self._files[(table, sid, key)] = (ccid, names)
        return bufs

    def _pack(self, table: str, sid: str, key: str, ccid: str, bufs: list) -> bytes:
        """A row's buffers, big ones to files; the files of the row it replaces are
        removed once it is committed."""
        blob, names = pack(bufs, self.blobs)
        self._forget(table, sid, key)
        if names:
            self._files[(table, sid, key)] = (ccid, names)
        return blob

    def _forget(self, table: str, sid: str, key: str) -> None:
        old = self._files.pop((table, sid, key), None)
        if old is not None:
            self._unlink += old[1]

    def start_boot(self, client_id: str, session_key: str) -> None:
        """This run's identity towards the nodes (a later run fetches results with it)."""
        self.boot = max(self._live.boots, default=0) + 1
        self._write_now(("b", self.boot, client_id, session_key))

    def forget_boots(self, keep: set[int]) -> None:
        """Boots no job refers to any more (their node sessions are of no use)."""
        self._op(("B", *sorted(keep | {self.boot})))

    # ---- changes (queued until flush) ----------------------------------------------

    def session(self, sid: str, client_id: str, name: str, addr: str, root: str) -> None:
        self._op(("s", sid, client_id, name, addr, root))

    def drop_session(self, sid: str) -> None:
        self._op(("S", sid))
        for table, s, key in [k for k in self._files if k[1] == sid]:
            self._forget(table, s, key)

    def computation(self, sid: str, ccid: str, header: dict, bufs: list[bytes]) -> None:
        self._op(("c", sid, ccid, _text(header),
                  self._pack("computations", sid, ccid, ccid, bufs)))

    def drop_computation(self, sid: str, ccid: str) -> None:
        self._op(("C", sid, ccid))
        self._forget("computations", sid, ccid)
        for table, s, key in [k for k, (c, _) in self._files.items()
                              if k[0] == "jobs" and k[1] == sid and c == ccid]:
            self._forget(table, s, key)

    def job(self, sid: str, uid: str, ccid: str, header: dict, bufs: list,
            files: list[tuple[str, str]]) -> None:
        self._op(("j", sid, uid, ccid, _text(header), self._pack("jobs", sid, uid, ccid, bufs),
                  _text(files), None, None, None, None, None))

    def sent(self, sid: str, uid: str, ip: str, port: int, node_cid: str,
             node_uid: str) -> None:
        self._op(("w", sid, uid, self.boot, ip, port, node_cid, node_uid))

    def requeued(self, sid: str, uid: str) -> None:
        self._op(("w", sid, uid, None, None, None, None, None))

    def ended(self, sid: str, uid: str, header: dict, bufs: list) -> None:
        """A job's result (or the scheduler's verdict): kept until its program acks it."""
        self._forget("jobs", sid, uid)
        self._op(("e", sid, uid, _text(header), self._pack("results", sid, uid, "", bufs)))

    def acked(self, sid: str, uids: list[str]) -> None:
        for uid in uids:
            self._forget("results", sid, uid)
        self._op(("a", sid, *uids))

    def flush(self) -> None:
        """Write the queued changes (one write), then remove the files of rows gone."""
        if not self._ops:
            return
        ops, self._ops = self._ops, []
        try:
            self._write(ops)
            if self.records > max(COMPACT_MIN, COMPACT_FACTOR * self._compacted):
                self._compact(self._live)
        except OSError as exc:
            log.error("journal %s not written: %s (a restart would lose the changes)",
                      self.path, exc)
            self._unlink = []  # their rows may still be there: keep what they name
            return
        unlink, self._unlink = self._unlink, []
        self.blobs.remove(unlink)

    def close(self) -> None:
        self.flush()
        os.close(self.fd)
