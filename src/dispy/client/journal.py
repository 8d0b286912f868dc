"""The recover file the client writes: which jobs it handed to which node (SQLite, WAL),
journaled before it sends them and forgotten before it acknowledges their results, so
``recover_jobs`` (client/recover.py) finds every job after a crash."""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import time
from typing import Any

import cloudpickle

from .. import fsafe
from ..wire import auth
from .job import DispyJob

log = logging.getLogger("dispy")

#: ``peer`` is the id of the node (or dispyscheduler) a job was sent to: if that same
#: peer (not restarted since) has no record of the job, it never arrived (the program
#: crashed before the bytes left) and ``recover_jobs`` runs it from ``args``.
#: ``jobs`` is WITHOUT ROWID: one B-tree instead of a table plus a uid index halves the
#: pages each commit writes (a commit per dispatch batch is on the tiny-job hot path).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS clusters (cid TEXT PRIMARY KEY, name TEXT, session TEXT,
    key BLOB, certfile TEXT, keyfile TEXT, created REAL, spec BLOB);
CREATE TABLE IF NOT EXISTS jobs (uid TEXT PRIMARY KEY, cid TEXT, ip TEXT, port INTEGER,
    job_id TEXT, submit_time REAL, start_time REAL, args BLOB, peer TEXT) WITHOUT ROWID;
"""

_INSERT_JOB = "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"

#: Arguments larger than this are not kept in the recover file (a queued job with such
#: arguments cannot be rerun by recover_jobs); keeps the journal cheap for big payloads.
MAX_KEPT_ARGS = 1 << 20


def default_path() -> str:
    """A new ``_dispy_YYYYMMDDHHMMSS`` file (``_N`` added when programs start together)."""
    base = os.path.abspath(time.strftime("_dispy_%Y%m%d%H%M%S"))
    for n in itertools.count():
        path = f"{base}_{n}" if n else base
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


class Journal:
    """One recover file; written on the client's engine thread only."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            # 0600 from the start, never through a symlink: it holds the key that
            # authenticates to the nodes (SQLite gives -wal the same mode)
            fsafe.private_file(path)
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # Only this process writes it, and only a crash of this process must not lose
            # it (the OS keeps written pages): no fsync, no shared-memory locking per commit.
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=OFF")
            self.db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ValueError(f"recover file {path} cannot be used (is another program using"
                             f" it?): {exc}") from None
        self.clusters: set[str] = set()
        self._queued: list[tuple[DispyJob, str]] = []
        self._added: list[tuple] = []
        self._done: list[tuple] = []
        self.closed = False

    def add_cluster(self, cs: Any, session: str) -> None:
        profile = cs.profile
        try:  # what recover_jobs needs to run the jobs that were still queued
            spec = cloudpickle.dumps({
                "name": cs.name, "package": cs.package, "allocs": cs.allocs,
                "dest_path": cs.dest_path, "cleanup": cs.cleanup is not False,
                "reentrant": cs.reentrant, "pulse_interval": cs.pulse_interval,
                "scheduler": getattr(cs, "scheduler", None),
                "exclusive": bool(getattr(cs, "exclusive", False))})
        except Exception as exc:
            log.warning("%r: queued jobs cannot be rerun after a crash: %s", cs.name, exc)
            spec = None
        self.db.execute(
            "INSERT OR REPLACE INTO clusters VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (cs.cid, cs.name, session, auth.key_of(profile.secret),
             _abs(profile.certfile), _abs(profile.keyfile), time.time(), spec))
        self.clusters.add(cs.cid)

    def queued(self, job: DispyJob, cid: str) -> None:
        self._queued.append((job, cid))

    def dispatched(self, job: DispyJob, cid: str, ip: str, port: int,
                   peer: str | None = None) -> None:
        self._added.append((job._uid, cid, ip, port, _id_text(job), job.submit_time,
                            time.time(), _kept_args(job), peer))

    def finished(self, uid: str) -> None:
        self._done.append((uid,))

    def flush(self) -> None:
        """Commit what was journaled: before jobs are sent and before results are acked."""
        if not (self._queued or self._added or self._done) or self.closed:
            return
        queued = [(job._uid, cid, None, None, _id_text(job), job.submit_time, None,
                   _kept_args(job), None)
                  for job, cid in self._queued if job.status == DispyJob.Created]
        self._queued = []
        with self.db:
            if queued:
                self.db.executemany(_INSERT_JOB, queued)
            if self._added:
                self.db.executemany(_INSERT_JOB, self._added)
            if self._done:
                self.db.executemany("DELETE FROM jobs WHERE uid = ?", self._done)
        self._added, self._done = [], []

    def remove_cluster(self, cid: str) -> bool:
        """A clean close; returns True when the file is gone (no cluster left in it)."""
        self.flush()
        with self.db:
            self.db.execute("DELETE FROM jobs WHERE cid = ?", (cid,))
            self.db.execute("DELETE FROM clusters WHERE cid = ?", (cid,))
        self.clusters.discard(cid)
        if self.clusters:
            return False
        self.closed = True  # a callback that ran late has nothing to forget here
        self.db.close()
        remove_file(self.path)
        return True


    def close_at_exit(self) -> int:
        """The program exits: remove the file if no job in it is left to recover
        (returns 0), else keep it for ``recover_jobs`` (returns how many jobs it keeps)."""
        self.flush()
        left = self.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        self.closed = True
        self.db.close()
        if not left:
            remove_file(self.path)
        return left


def _kept_args(job: DispyJob) -> bytes | None:
    """A job's arguments as the recover file keeps them (not big ones)."""
    args = job._args
    return args if args is not None and job._oob is None and len(args) <= MAX_KEPT_ARGS \
        else None


def _id_text(job: DispyJob) -> str | None:
    """The user's job id, if it is a plain value (kept as its repr)."""
    return repr(job.id) if isinstance(job.id, (int, float, str)) else None


def _abs(path: str | None) -> str | None:
    return os.path.abspath(path) if path else None


def remove_file(path: str) -> None:
    """Remove a recover file with its SQLite side files."""
    for name in (path, path + "-wal", path + "-shm"):
        try:
            os.unlink(name)
        except OSError:
            pass
