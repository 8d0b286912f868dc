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
import logging
import os
import sqlite3
import time
from typing import Any

from .. import config
from ..wire import auth, tls
from ..wire.frames import FrameError, read_frame, write_frame
from ..wire.handshake import HandshakeError, client_handshake
from .job import DispyJob, decode_result

log = logging.getLogger("dispy")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clusters (cid TEXT PRIMARY KEY, name TEXT, client_id TEXT,
    key BLOB, certfile TEXT, keyfile TEXT, created REAL);
CREATE TABLE IF NOT EXISTS jobs (uid TEXT PRIMARY KEY, cid TEXT, ip TEXT, port INTEGER,
    job_id TEXT, submit_time REAL, start_time REAL);
"""


def default_path() -> str:
    return os.path.abspath(time.strftime("_dispy_%Y%m%d%H%M%S"))


class Journal:
    """One recover file; written on the client's engine thread only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        os.chmod(path, 0o600)  # it holds the key that authenticates to the nodes
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.clusters: set[str] = set()
        self._added: list[tuple] = []
        self._done: list[tuple] = []

    def add_cluster(self, cs: Any, client_id: str) -> None:
        profile = cs.profile
        self.db.execute(
            "INSERT OR REPLACE INTO clusters VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cs.cid, cs.name, client_id, auth.derive_key(profile.secret),
             _abs(profile.certfile), _abs(profile.keyfile), time.time()))
        self.clusters.add(cs.cid)

    def dispatched(self, job: DispyJob, cid: str, ip: str, port: int) -> None:
        job_id = job.id if isinstance(job.id, (int, float, str)) else None
        self._added.append((job._uid, cid, ip, port, None if job_id is None else repr(job_id),
                            job.submit_time, time.time()))

    def finished(self, uid: str) -> None:
        self._done.append((uid,))

    def flush(self) -> None:
        """Commit what was journaled: before jobs are sent and before results are acked."""
        if not (self._added or self._done):
            return
        with self.db:
            if self._added:
                self.db.executemany("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
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
    """Collect the results of the jobs a crashed client program left on its nodes.

    Waits for running jobs (at most ``timeout`` seconds), cancels those still running
    then when ``terminate_pending``, and releases the nodes. Jobs a node no longer
    knows (it was restarted while they ran) come back Abandoned with the reason. Jobs
    still running after ``timeout`` come back Running and stay in the recover file, so
    a later call can fetch them; the file is removed once nothing is left in it.
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
    groups: dict[tuple, list[tuple]] = {}
    for row in rows:
        cluster = clusters.get(row[1])
        if cluster is None:
            continue
        groups.setdefault((row[2], row[3], cluster[2], cluster[3], cluster[4], cluster[5]),
                          []).append(row)
    jobs: list[DispyJob] = []

    async def run_all() -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        await asyncio.gather(*(_recover_node(target, group, deadline, terminate_pending, jobs)
                               for target, group in groups.items()))

    asyncio.run(run_all())
    for job in jobs:
        job.finish.set()  # job() returns at once; unfinished ones show status Running
    done = [(job._uid,) for job in jobs if job.status != DispyJob.Running]
    with db:
        db.executemany("DELETE FROM jobs WHERE uid = ?", done)
        left = {row[0] for row in db.execute("SELECT DISTINCT cid FROM jobs")}
        db.execute(f"DELETE FROM clusters WHERE cid NOT IN ({','.join('?' * len(left))})",
                   tuple(left))
    db.close()
    if not left:
        _unlink(path)
    return jobs


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
    job.finish.set()


def _end(job: DispyJob, status: int, reason: str) -> None:
    job.status, job.exception, job.end_time = status, reason, time.time()
    job._final = True
    job.finish.set()


def _give_up(pending: dict[str, DispyJob], reason: str) -> None:
    log.warning("recover_jobs: %s; %d job(s) not recovered", reason, len(pending))
    for job in pending.values():
        job.exception = reason
