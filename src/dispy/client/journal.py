"""The recover file the client writes: which jobs it handed to which node, journaled
before it sends them and forgotten before it acknowledges their results, so
``recover_jobs`` (client/recover.py) finds every job after a crash.

An append-only log: each commit is one ``write`` of the records it adds (a job queued
or sent, jobs forgotten), so the file costs a system call per batch of jobs, not pages
rewritten per job (the SQLite file it replaces cost about 60 us of the client's CPU per
tiny job). No fsync: it guards against the program dying, not the OS. The live state is
kept in memory too; once the log holds four times more records than are live it is
rewritten with only those (atomic rename). A record cut short by a crash ends the log.

Format: ``MAGIC``, then records (``recordlog``: a length and a ``marshal``ed tuple of
plain values): ``("c", cid, name, session, key, certfile,
keyfile, created, spec)`` a cluster; ``("x", cid)`` a cluster and its jobs removed;
``("j", uid, cid, ip, port, job_id, submit_time, start_time, args, peer)`` a job (``ip``
None: still queued) replacing any earlier record of it; ``("f", uid, ...)`` jobs
forgotten. The rows ``read_file`` gives are those tuples without their tag.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

import cloudpickle

from .. import fsafe
from ..daemon import recordlog
from ..wire import auth
from .job import DispyJob

log = logging.getLogger("dispy")

MAGIC = b"dispy recover file 2\n"
#: the log is rewritten when it holds this many more records than are live
COMPACT_FACTOR = 4
COMPACT_MIN = 50_000

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


def _replay(data: bytes, path: str) -> tuple[dict[str, tuple], dict[str, tuple], int, int]:
    """(clusters, jobs, records, end of the last whole record) of a log's bytes."""
    if not data.startswith(MAGIC):
        raise ValueError(f"{path} is not a dispy recover file")
    clusters: dict[str, tuple] = {}
    jobs: dict[str, tuple] = {}
    pos, records = len(MAGIC), 0
    for rec, end in recordlog.records(data, pos):
        tag = rec[0]
        if tag == "j" and len(rec) == 10:
            jobs[rec[1]] = rec[1:]
        elif tag == "f":
            for uid in rec[1:]:
                jobs.pop(uid, None)
        elif tag == "c" and len(rec) == 9:
            clusters[rec[1]] = rec[1:]
        elif tag == "x" and len(rec) == 2:
            clusters.pop(rec[1], None)
            for uid in [u for u, row in jobs.items() if row[1] == rec[1]]:
                del jobs[uid]
        else:
            break
        pos = end
        records += 1
    return clusters, jobs, records, pos


def read_file(path: str) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(clusters by cid, jobs by uid) as the recover file at ``path`` holds them;
    ValueError when it is none."""
    with open(path, "rb") as fh:
        data = fh.read()
    clusters, jobs, _, _ = _replay(data, path)
    return clusters, jobs


class Journal:
    """One recover file; written on the client's engine thread only (or by
    ``recover_jobs``, once its program is gone)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            # 0600 from the start, never through a symlink: it holds the key that
            # authenticates to the nodes
            fsafe.private_file(path)
            self.fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise ValueError(f"recover file {path} cannot be used: {exc}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            data = os.pread(self.fd, os.fstat(self.fd).st_size, 0)
            if not data:
                os.write(self.fd, MAGIC)
                data = MAGIC
            #: what the file holds now (rows as read_file gives them)
            self.cluster_rows, self.rows, self.records, self.size = _replay(data, path)
            os.ftruncate(self.fd, self.size)  # a record cut short by a crash
        except (OSError, ValueError) as exc:
            os.close(self.fd)
            raise ValueError(f"recover file {path} cannot be used (is another program"
                             f" using it?): {exc}") from None
        self.clusters: set[str] = set()
        #: jobs queued and their clusters' ids: two lists, no tuple per job
        self._queued: list[DispyJob] = []
        self._queued_cids: list[str] = []
        self._added: list[tuple] = []
        self._done: list[str] = []
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
        self.add_rows([(cs.cid, cs.name, session, auth.key_of(profile.secret),
                        _abs(profile.certfile), _abs(profile.keyfile), time.time(), spec)], [])
        self.clusters.add(cs.cid)

    def queued(self, job: DispyJob, cid: str) -> None:
        self._queued.append(job)
        self._queued_cids.append(cid)

    def dispatched(self, job: DispyJob, cid: str, ip: str, port: int,
                   peer: str | None = None) -> None:
        self._added.append((job._uid, cid, ip, port, _id_text(job), job.submit_time,
                            time.time(), _kept_args(job), peer))

    def finished(self, uid: str) -> None:
        self._done.append(uid)

    def flush(self) -> None:
        """Commit what was journaled: before jobs are sent and before results are acked."""
        if not (self._queued or self._added or self._done) or self.closed:
            return
        rows = [(job._uid, cid, None, None, _id_text(job), job.submit_time, None,
                 _kept_args(job), None)
                for job, cid in zip(self._queued, self._queued_cids, strict=True)
                if job.status == DispyJob.Created]
        rows += self._added
        done = self._done
        self._queued, self._queued_cids, self._added, self._done = [], [], [], []
        self.add_rows([], rows, done)

    def add_rows(self, clusters: Iterable[tuple], jobs: Iterable[tuple],
                 forgotten: list[str] | None = None) -> None:
        """Append clusters and jobs (rows as read_file gives them) and forget jobs."""
        pieces = []
        for row in clusters:
            pieces.append(recordlog.record(("c", *row)))
            self.cluster_rows[row[0]] = row
        for row in jobs:
            pieces.append(recordlog.record(("j", *row)))
            self.rows[row[0]] = row
        if forgotten:
            pieces.append(recordlog.record(("f", *forgotten)))
            for uid in forgotten:
                self.rows.pop(uid, None)
        self._append(pieces)

    def forget(self, uids: list[str]) -> None:
        self.add_rows([], [], uids)

    def remove_clusters(self, cids: Iterable[str]) -> None:
        pieces = []
        for cid in cids:
            pieces.append(recordlog.record(("x", cid)))
            self.cluster_rows.pop(cid, None)
            for uid in [u for u, row in self.rows.items() if row[1] == cid]:
                del self.rows[uid]
        self._append(pieces)

    def _append(self, pieces: list[bytes]) -> None:
        if not pieces:
            return
        self.size = recordlog.append(self.fd, b"".join(pieces), self.size)
        self.records += len(pieces)
        if self.records > max(COMPACT_MIN,
                              COMPACT_FACTOR * (len(self.rows) + len(self.cluster_rows))):
            self.compact()

    def compact(self) -> None:
        """Rewrite the log with only what is live (atomic rename)."""
        data = MAGIC + b"".join(
            [recordlog.record(("c", *row)) for row in self.cluster_rows.values()]
            + [recordlog.record(("j", *row)) for row in self.rows.values()])
        fd = recordlog.rewrite(self.path, data)
        os.close(self.fd)
        self.fd, self.size = fd, len(data)
        self.records = len(self.rows) + len(self.cluster_rows)

    def remove_cluster(self, cid: str) -> bool:
        """A clean close; returns True when the file is gone (no cluster left in it)."""
        self.flush()
        self.remove_clusters([cid])
        self.clusters.discard(cid)
        if self.clusters:
            return False
        self.closed = True  # a callback that ran late has nothing to forget here
        self.close()
        remove_file(self.path)
        return True

    def close(self) -> None:
        """Let go of the file (what was committed stays in it)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def close_at_exit(self) -> int:
        """The program exits: remove the file if no job in it is left to recover
        (returns 0), else keep it for ``recover_jobs`` (returns how many jobs it keeps)."""
        self.flush()
        left = len(self.rows)
        self.closed = True
        self.close()
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
    """Remove a recover file (and a compaction's leftover)."""
    for name in (path, path + ".new"):
        try:
            os.unlink(name)
        except OSError:
            pass
