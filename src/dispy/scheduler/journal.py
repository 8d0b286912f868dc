"""dispyscheduler's journal: what a restarted scheduler needs so no program loses a job.

SQLite (WAL) in the scheduler's private directory. It keeps the scheduler's id (so its
programs reconnect to "the same" scheduler), the programs' sessions, their computations
as they sent them, every job as it arrived (until it ends), where each job was sent
(with the node session of that run of the scheduler, to fetch its result after a
restart), and every result until the program acknowledges it.

Writes are queued and committed by ``flush``, which the engine calls before it sends
jobs to nodes and before it acknowledges results to nodes: a job is on disk before any
node runs it, and a result before its node may forget it. Arguments and results stay
the bytes the programs and nodes sent: nothing here is unpickled.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any

from .. import fsafe
from ..wire.codec import from_json, to_json
from .blobs import BLOB_MIN, BlobStore

log = logging.getLogger("dispy.scheduler")


def _text(value: Any) -> str:
    """A header for a TEXT column (orjson: a job's header is written per job)."""
    return to_json(value).decode()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS boots (boot INTEGER PRIMARY KEY, client_id TEXT, session TEXT);
CREATE TABLE IF NOT EXISTS sessions (sid TEXT PRIMARY KEY, client_id TEXT, name TEXT,
    addr TEXT, root TEXT);
CREATE TABLE IF NOT EXISTS computations (sid TEXT, ccid TEXT, header TEXT, bufs BLOB,
    PRIMARY KEY (sid, ccid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (sid TEXT, uid TEXT, ccid TEXT, header TEXT, bufs BLOB,
    files TEXT, boot INTEGER, ip TEXT, port INTEGER, node_cid TEXT, node_uid TEXT,
    PRIMARY KEY (sid, uid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (sid TEXT, uid TEXT, header TEXT, bufs BLOB,
    PRIMARY KEY (sid, uid)) WITHOUT ROWID;
"""


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


class SchedulerJournal:
    """The journal; used on the scheduler's loop only."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            fsafe.private_file(path)
            self.db = sqlite3.connect(path, isolation_level=None)
            # only a crash of this process must not lose it: the OS keeps written pages
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=OFF")
            self.db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise ValueError(f"journal {path} cannot be used: {exc}") from None
        try:
            self.blobs = BlobStore(path + ".blobs")
        except (OSError, ValueError) as exc:
            raise ValueError(f"journal {path} cannot be used: {exc}") from None
        self._ops: list[tuple[str, tuple]] = []
        #: (table, sid, ccid or uid) -> (ccid, files its row names)
        self._files: dict[tuple[str, str, str], tuple[str, list[str]]] = {}
        #: files whose rows are deleted by the queued changes: removed after the commit
        self._unlink: list[str] = []
        self.boot = 0

    # ---- start -------------------------------------------------------------------------

    def scheduler_id(self) -> str:
        """The scheduler's id, the same across restarts (its programs reconnect to it)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'scheduler_id'").fetchone()
        if row is not None:
            return str(row[0])
        sid = uuid.uuid4().hex
        with self.db:
            self.db.execute("INSERT INTO meta VALUES ('scheduler_id', ?)", (sid,))
        return sid

    def load(self) -> SavedState:
        state = SavedState()
        db = self.db
        with db:  # what a session ended meanwhile left behind (a late result)
            for table in ("computations", "jobs", "results"):
                db.execute(f"DELETE FROM {table} WHERE sid NOT IN (SELECT sid FROM sessions)")
        state.boots = {b: (c, s) for b, c, s in db.execute("SELECT * FROM boots")}
        state.sessions = list(db.execute("SELECT * FROM sessions"))
        self._files.clear()
        for sid, ccid, header, bufs in db.execute("SELECT * FROM computations"):
            state.computations.append((sid, ccid, from_json(header),
                                       self._unpack("computations", sid, ccid, ccid, bufs)))
        for row in db.execute("SELECT * FROM jobs"):
            sid, uid, ccid, header, bufs, files, boot, ip, port, ncid, nuid = row
            sent = (boot, ip, port, ncid, nuid) if ip is not None else None
            state.jobs.append(SavedJob(sid, uid, ccid, from_json(header),
                                       self._unpack("jobs", sid, uid, ccid, bufs),
                                       [tuple(f) for f in from_json(files)], sent))
        for sid, uid, header, bufs in db.execute("SELECT * FROM results"):
            state.results.append((sid, uid, from_json(header),
                                  self._unpack("results", sid, uid, "", bufs)))
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
        row = self.db.execute("SELECT MAX(boot) FROM boots").fetchone()
        self.boot = (row[0] or 0) + 1
        with self.db:
            self.db.execute("INSERT INTO boots VALUES (?, ?, ?)",
                            (self.boot, client_id, session_key))

    def forget_boots(self, keep: set[int]) -> None:
        """Boots no job refers to any more (their node sessions are of no use)."""
        keep = keep | {self.boot}
        marks = ",".join("?" * len(keep))
        self._ops.append((f"DELETE FROM boots WHERE boot NOT IN ({marks})", tuple(keep)))

    # ---- changes (queued until flush) ----------------------------------------------

    def session(self, sid: str, client_id: str, name: str, addr: str, root: str) -> None:
        self._ops.append(("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?)",
                          (sid, client_id, name, addr, root)))

    def drop_session(self, sid: str) -> None:
        for table in ("sessions", "computations", "jobs", "results"):
            self._ops.append((f"DELETE FROM {table} WHERE sid = ?", (sid,)))
        for table, s, key in [k for k in self._files if k[1] == sid]:
            self._forget(table, s, key)

    def computation(self, sid: str, ccid: str, header: dict, bufs: list[bytes]) -> None:
        self._ops.append(("INSERT OR REPLACE INTO computations VALUES (?, ?, ?, ?)",
                          (sid, ccid, _text(header),
                           self._pack("computations", sid, ccid, ccid, bufs))))

    def drop_computation(self, sid: str, ccid: str) -> None:
        self._ops.append(("DELETE FROM computations WHERE sid = ? AND ccid = ?", (sid, ccid)))
        self._ops.append(("DELETE FROM jobs WHERE sid = ? AND ccid = ?", (sid, ccid)))
        self._forget("computations", sid, ccid)
        for table, s, key in [k for k, (c, _) in self._files.items()
                              if k[0] == "jobs" and k[1] == sid and c == ccid]:
            self._forget(table, s, key)

    def job(self, sid: str, uid: str, ccid: str, header: dict, bufs: list,
            files: list[tuple[str, str]]) -> None:
        self._ops.append((
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL,"
            " NULL)", (sid, uid, ccid, _text(header), self._pack("jobs", sid, uid, ccid, bufs),
                       _text(files))))

    def sent(self, sid: str, uid: str, ip: str, port: int, node_cid: str,
             node_uid: str) -> None:
        self._ops.append(("UPDATE jobs SET boot = ?, ip = ?, port = ?, node_cid = ?,"
                          " node_uid = ? WHERE sid = ? AND uid = ?",
                          (self.boot, ip, port, node_cid, node_uid, sid, uid)))

    def requeued(self, sid: str, uid: str) -> None:
        self._ops.append(("UPDATE jobs SET boot = NULL, ip = NULL, port = NULL,"
                          " node_cid = NULL, node_uid = NULL WHERE sid = ? AND uid = ?",
                          (sid, uid)))

    def ended(self, sid: str, uid: str, header: dict, bufs: list) -> None:
        """A job's result (or the scheduler's verdict): kept until its program acks it."""
        self._ops.append(("DELETE FROM jobs WHERE sid = ? AND uid = ?", (sid, uid)))
        self._forget("jobs", sid, uid)
        self._ops.append(("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?)",
                          (sid, uid, _text(header), self._pack("results", sid, uid, "", bufs))))

    def acked(self, sid: str, uids: list[str]) -> None:
        for uid in uids:
            self._ops.append(("DELETE FROM results WHERE sid = ? AND uid = ?", (sid, uid)))
            self._forget("results", sid, uid)

    def flush(self) -> None:
        """Commit the queued changes (consecutive ones of a kind in one executemany)."""
        if not self._ops:
            return
        ops, self._ops = self._ops, []
        try:
            with self.db:
                i = 0
                while i < len(ops):
                    sql = ops[i][0]
                    j = i
                    while j < len(ops) and ops[j][0] == sql:
                        j += 1
                    self.db.executemany(sql, [params for _, params in ops[i:j]])
                    i = j
        except sqlite3.Error as exc:
            log.error("journal %s not written: %s (a restart would lose the changes)",
                      self.path, exc)
            self._unlink = []  # their rows may still be there: keep what they name
            return
        unlink, self._unlink = self._unlink, []
        self.blobs.remove(unlink)

    def close(self) -> None:
        self.flush()
        self.db.close()

