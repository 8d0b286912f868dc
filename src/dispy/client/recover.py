"""The recover file, and ``recover_jobs`` that uses it after the client program crashed.

The client journals which jobs it handed to which node (SQLite, WAL) before it sends
them, and forgets a job before it acknowledges the job's result to the node. So after a
crash every job in the file is either still known to its node (running, or its result
kept there until acknowledged) or was lost with the node. ``recover_jobs`` reconnects
as the crashed client, collects those results and releases the nodes.
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import logging
import os
import sqlite3
import time
from typing import Any

import cloudpickle

from .. import config, fsafe
from ..wire import auth, tls
from ..wire.frames import FrameError, read_frame, write_frame
from ..wire.handshake import HandshakeError, client_handshake
from .job import DispyJob, decode_result

log = logging.getLogger("dispy")

#: ``jobs`` is WITHOUT ROWID: one B-tree instead of a table plus a uid index halves the
#: pages each commit writes (a commit per dispatch batch is on the tiny-job hot path).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS clusters (cid TEXT PRIMARY KEY, name TEXT, client_id TEXT,
    key BLOB, certfile TEXT, keyfile TEXT, created REAL, spec BLOB);
CREATE TABLE IF NOT EXISTS jobs (uid TEXT PRIMARY KEY, cid TEXT, ip TEXT, port INTEGER,
    job_id TEXT, submit_time REAL, start_time REAL, args BLOB) WITHOUT ROWID;
"""

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

    def add_cluster(self, cs: Any, client_id: str) -> None:
        profile = cs.profile
        try:  # what recover_jobs needs to run the jobs that were still queued
            spec = cloudpickle.dumps({
                "name": cs.name, "package": cs.package, "allocs": cs.allocs,
                "dest_path": cs.dest_path, "cleanup": cs.cleanup is not False,
                "reentrant": cs.reentrant, "pulse_interval": cs.pulse_interval})
        except Exception as exc:
            log.warning("%r: queued jobs cannot be rerun after a crash: %s", cs.name, exc)
            spec = None
        self.db.execute(
            "INSERT OR REPLACE INTO clusters VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (cs.cid, cs.name, client_id, auth.key_of(profile.secret),
             _abs(profile.certfile), _abs(profile.keyfile), time.time(), spec))
        self.clusters.add(cs.cid)

    def queued(self, job: DispyJob, cid: str) -> None:
        self._queued.append((job, cid))

    def dispatched(self, job: DispyJob, cid: str, ip: str, port: int) -> None:
        self._added.append((job._uid, cid, ip, port, _id_text(job), job.submit_time,
                            time.time(), None))

    def finished(self, uid: str) -> None:
        self._done.append((uid,))

    def flush(self) -> None:
        """Commit what was journaled: before jobs are sent and before results are acked."""
        if not (self._queued or self._added or self._done):
            return
        queued = [(job._uid, cid, None, None, _id_text(job), job.submit_time, None,
                   job._args if job._args is not None and job._oob is None
                   and len(job._args) <= MAX_KEPT_ARGS
                   else None)
                  for job, cid in self._queued if job.status == DispyJob.Created]
        self._queued = []
        with self.db:
            if queued:
                self.db.executemany("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                    queued)
            if self._added:
                self.db.executemany("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                    self._added)
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
        self.db.close()
        _unlink(self.path)
        return True


def _id_text(job: DispyJob) -> str | None:
    """The user's job id, if it is a plain value (kept as its repr)."""
    return repr(job.id) if isinstance(job.id, (int, float, str)) else None


def _abs(path: str | None) -> str | None:
    return os.path.abspath(path) if path else None


def _unlink(path: str) -> None:
    for name in (path, path + "-wal", path + "-shm"):
        try:
            os.unlink(name)
        except OSError:
            pass


def newest_recover_file(directory: str = ".") -> str | None:
    files = [f for f in glob.glob(os.path.join(directory, "_dispy_*"))
             if not f.endswith(("-wal", "-shm")) and os.path.isfile(f)]
    return max(files, key=os.path.getmtime) if files else None


# ---- recover_jobs ---------------------------------------------------------------------


def recover_jobs(recover_file: str | None = None, timeout: float | None = None,
                 terminate_pending: bool = False) -> list[DispyJob]:
    """Collect the results of the jobs a crashed client program left behind.

    Jobs it had sent to nodes: their results are fetched from the nodes (running ones
    are waited for, at most ``timeout`` seconds, then cancelled if
    ``terminate_pending``), and the nodes are released. Jobs still queued in the crashed
    program are run now with its computation, kept in the file. Jobs a node no longer
    knows (it was killed while they ran) come back Abandoned with the reason. Jobs not
    finished when ``timeout`` passes come back Running (or Cancelled) and stay in the
    file for a later call; the file is removed once nothing is left in it.
    """
    path = recover_file or newest_recover_file()
    if path is None or not os.path.isfile(path):
        raise ValueError(f"recover file {recover_file or '_dispy_*'} not found")
    db = sqlite3.connect(path, isolation_level=None)
    try:
        clusters = {row[0]: row for row in db.execute("SELECT * FROM clusters")}
        rows = list(db.execute("SELECT * FROM jobs"))
    except sqlite3.DatabaseError as exc:
        db.close()
        raise ValueError(f"{path} is not a dispy recover file: {exc}") from None
    deadline = None if timeout is None else time.monotonic() + timeout
    groups: dict[tuple, list[tuple]] = {}
    queued: dict[str, list[tuple]] = {}
    for row in rows:
        cluster = clusters.get(row[1])
        if cluster is None:
            continue
        if row[2] is None:
            queued.setdefault(row[1], []).append(row)
            continue
        groups.setdefault((row[2], row[3], cluster[2], cluster[3], cluster[4], cluster[5]),
                          []).append(row)
    jobs: list[DispyJob] = []

    async def run_all() -> None:
        await asyncio.gather(*(_recover_node(target, group, deadline, terminate_pending, jobs)
                               for target, group in groups.items()))

    asyncio.run(run_all())
    for job in jobs:
        job._set_finished()  # job() returns at once; unfinished ones show status Running
    done = [(job._uid,) for job in jobs if job.status != DispyJob.Running]
    for cid, group in queued.items():
        done += _rerun(path, clusters[cid], group, deadline, terminate_pending, jobs)
    with db:
        db.executemany("DELETE FROM jobs WHERE uid = ?", done)
        left = {row[0] for row in db.execute("SELECT DISTINCT cid FROM jobs")}
        db.execute(f"DELETE FROM clusters WHERE cid NOT IN ({','.join('?' * len(left))})",
                   tuple(left))
    db.close()
    if not left:
        _unlink(path)
    return jobs


def _rerun(path: str, cluster: tuple, rows: list[tuple], deadline: float | None,
           terminate: bool, out: list[DispyJob]) -> list[tuple]:
    """Run the jobs the crashed program had not sent yet; returns the rows now done."""
    from .cluster import JobCluster

    runnable = [row for row in rows if row[7] is not None]
    for row in rows:
        if row[7] is None:
            job = _recovered(row)
            _end(job, DispyJob.Abandoned, "Abandoned: it was queued in the crashed program"
                 " and its arguments were too big to keep in the recover file")
            out.append(job)
    gone = [(row[0],) for row in rows if row[7] is None]
    if not runnable:
        return gone
    try:
        spec = cloudpickle.loads(cluster[7])
    except Exception as exc:
        log.warning("recover_jobs: %d queued job(s) of %r cannot be rerun: %s",
                    len(runnable), cluster[1], exc)
        return gone
    rerun = JobCluster(
        None, nodes=spec["allocs"], dest_path=spec["dest_path"], cleanup=spec["cleanup"],
        reentrant=spec["reentrant"], pulse_interval=spec["pulse_interval"],
        secret=bytes(cluster[3]), certfile=cluster[4], keyfile=cluster[5], port=0,
        recover_file=path + ".rerun", _resume=spec)
    new = []
    for row in runnable:
        job_id = _recovered(row).id
        new.append((row, rerun._submit_packed(bytes(row[7]), job_id)))
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    finished = rerun.wait(wait)
    rerun.close(timeout=0, terminate=True)
    for row, job in new:
        out.append(job)
        if finished or terminate or job.status != DispyJob.Cancelled:
            gone.append((row[0],))
    return gone


def _recovered(row: tuple) -> DispyJob:
    job = DispyJob(None, None, row[0], row[5])
    if row[4] is not None:
        try:
            job.id = _literal(row[4])
        except ValueError:
            job.id = row[4]
    job.ip_addr, job.start_time = row[2], row[6]
    job.status = DispyJob.Running
    return job


def _literal(text: str) -> Any:
    import ast

    return ast.literal_eval(text)


async def _recover_node(target: tuple, rows: list[tuple], deadline: float | None,
                        terminate: bool, out: list[DispyJob]) -> None:
    ip, port, client_id, key, certfile, keyfile = target
    pending = {row[0]: _recovered(row) for row in rows}
    out.extend(pending.values())
    where = f"{ip}:{port}"
    try:
        ctx = tls.client_context(certfile, keyfile)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(ip, port, ssl=ctx, limit=1 << 20), config.MsgTimeout)
        await client_handshake(reader, writer, bytes(key),
                               {"client_id": client_id, "client_name": "recover_jobs"},
                               config.MsgTimeout)
    except (OSError, asyncio.TimeoutError, HandshakeError, FrameError,
            asyncio.IncompleteReadError) as exc:
        _give_up(pending, f"node {where} could not be reached: {exc or 'timed out'}")
        return
    cids = sorted({row[1] for row in rows})
    write_frame(writer, {"op": "jobs_query", "uids": list(pending), "reply": "q"})
    terminated = False
    try:
        while pending:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                if not terminate or terminated:
                    break
                terminated = True  # cancel what is left, then wait for those results
                for uid in pending:
                    write_frame(writer, {"op": "cancel", "cid": _cid_of(rows, uid), "uid": uid})
                deadline = time.monotonic() + config.MsgTimeout
                continue
            try:
                header, bufs = await asyncio.wait_for(
                    read_frame(reader, max_buffer=config.MaxFrameSize), wait)
            except asyncio.TimeoutError:
                continue
            op = header.get("op")
            if op == "done":
                uid = str(header.get("uid"))
                write_frame(writer, {"op": "ack", "uids": [uid]})
                job = pending.pop(uid, None)
                if job is not None:
                    _fill(job, header, bufs)
            elif op == "reply" and header.get("reply") == "q":
                for uid in header.get("unknown", ()):
                    job = pending.pop(uid, None)
                    if job is not None:
                        _end(job, DispyJob.Abandoned, f"Abandoned: node {where} has no record "
                             "of this job (it was restarted while the job ran)")
        if not pending:
            for cid in cids:
                write_frame(writer, {"op": "close", "cid": cid, "terminate": terminate})
        await asyncio.wait_for(writer.drain(), config.MsgTimeout)
    except (OSError, asyncio.IncompleteReadError, FrameError, asyncio.TimeoutError) as exc:
        _give_up(pending, f"connection to node {where} lost: {exc.__class__.__name__}")
    finally:
        writer.close()


def _cid_of(rows: list[tuple], uid: str) -> str:
    return next(row[1] for row in rows if row[0] == uid)


def _fill(job: DispyJob, header: dict, bufs: list[bytes]) -> None:
    job.status, job.result, job.stdout, job.stderr, job.exception = decode_result(header, bufs)
    job.start_time = header.get("start_time", job.start_time)
    job.end_time = header.get("end_time", time.time())
    job._final = True
    job._set_finished()


def _end(job: DispyJob, status: int, reason: str) -> None:
    job.status, job.exception, job.end_time = status, reason, time.time()
    job._final = True
    job._set_finished()


def _give_up(pending: dict[str, DispyJob], reason: str) -> None:
    log.warning("recover_jobs: %s; %d job(s) not recovered", reason, len(pending))
    for job in pending.values():
        job.exception = reason
