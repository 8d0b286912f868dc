"""``recover_jobs``: the results of a crashed client program, from its recover file.

The client journals which jobs it handed to which node (client/journal.py) before it
sends them, and forgets a job before it acknowledges the job's result to the node. So after a
crash every job in the file is either still known to its node (running, or its result
kept there until acknowledged) or was lost with the node. ``recover_jobs`` reconnects
as the crashed client, collects those results and releases the nodes.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from .. import config
from ..eventloop import within
from ..log import why
from ..wire import messages, tls
from ..wire.codec import FrameError, Limits
from ..wire.connection import Connection, ConnectionClosed
from ..wire.handshake import HandshakeError, client_handshake
from . import futures  # noqa: F401  (gives the jobs made here their ``future``)
from .job import DispyJob, decode_result
from .journal import Journal, read_file, remove_file

log = logging.getLogger("dispy")

def newest_recover_file(directory: str = ".") -> str | None:
    files = [f for f in glob.glob(os.path.join(directory, "_dispy_*"))
             if not f.endswith((".new", ".rerun")) and os.path.isfile(f)]
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
    finished when ``timeout`` passes go on where they are and come back Running (or
    Created, still waiting for a CPU); they stay in the file and a later call returns
    their results. With ``terminate_pending`` they are cancelled instead. The file is
    removed once nothing is left in it.
    """
    path = recover_file or newest_recover_file()
    if path is None or not os.path.isfile(path):
        raise ValueError(f"recover file {recover_file or '_dispy_*'} not found")
    clusters, by_uid = read_file(path)
    rows = list(by_uid.values())
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

    arrived_not: list[tuple] = []

    async def run_all() -> None:
        await asyncio.gather(*(_recover_node(target, group, deadline, terminate_pending, jobs,
                                             arrived_not)
                               for target, group in groups.items()))

    asyncio.run(run_all())
    for row in arrived_not:  # sent, but the crash came before the bytes left: run them
        queued.setdefault(row[1], []).append(row)
    for job in jobs:
        job._set_finished()  # job() returns at once; unfinished ones show status Running
    done = [job._uid for job in jobs if job.status != DispyJob.Running]
    for cid, group in queued.items():
        done += _rerun(path, clusters[cid], group, deadline, terminate_pending, jobs)
    journal = Journal(path)
    journal.forget(done)
    left = {row[1] for row in journal.rows.values()}
    journal.remove_clusters([cid for cid in journal.cluster_rows if cid not in left])
    journal.close()
    if not left:
        remove_file(path)
    return jobs


def _rerun(path: str, cluster: tuple, rows: list[tuple], deadline: float | None,
           terminate: bool, out: list[DispyJob]) -> list[str]:
    """Run the jobs the crashed program had not sent yet; returns the uids now done."""
    from .cluster import JobCluster
    from .shared import SharedJobCluster

    runnable = [row for row in rows if row[7] is not None]
    for row in rows:
        if row[7] is None:
            job = _recovered(row)
            _end(job, DispyJob.Abandoned, "Abandoned: it was queued in the crashed program"
                 " and its arguments were too big to keep in the recover file")
            out.append(job)
    gone = [row[0] for row in rows if row[7] is None]
    if not runnable:
        return gone
    try:
        spec = cloudpickle.loads(cluster[7])
    except Exception as exc:
        log.warning("recover_jobs: %d queued job(s) of %r cannot be rerun: %s",
                    len(runnable), cluster[1], exc)
        return gone
    common: dict[str, Any] = dict(
        nodes=spec["allocs"], dest_path=spec["dest_path"], cleanup=spec["cleanup"],
        reentrant=spec["reentrant"], secret=bytes(cluster[3]), certfile=cluster[4],
        keyfile=cluster[5], recover_file=path + ".rerun", _resume=spec)
    scheduler = spec.get("scheduler")
    rerun: JobCluster
    if scheduler:  # a shared program's jobs run through its dispyscheduler again
        rerun = SharedJobCluster(None, scheduler_node=scheduler[0], scheduler_port=scheduler[1],
                                 exclusive=spec.get("exclusive", False), **common)
    else:
        rerun = JobCluster(None, pulse_interval=spec["pulse_interval"], port=0, **common)
    new = []
    for row in runnable:
        job_id = _recovered(row).id
        new.append((row, rerun._submit_packed(bytes(row[7]), job_id)))
    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
    finished = rerun.wait(wait)
    if finished or terminate:
        rerun.close(timeout=0, terminate=True)
    else:  # the jobs go on (as the spec says of timeout); a later call fetches them
        rerun._detach()
        _adopt(path, path + ".rerun", [job._uid for _, job in new if not job._final])
    for row, job in new:
        out.append(job)
        gone.append(row[0])
    return gone


def _adopt(path: str, rerun_path: str, uids: list[str]) -> None:
    """Move the rerun's journal rows of unfinished jobs (where they run, or their
    arguments if still queued) and its cluster into the recover file."""
    clusters, jobs = read_file(rerun_path)
    remove_file(rerun_path)
    journal = Journal(path)
    try:
        journal.add_rows(clusters.values(), [jobs[uid] for uid in uids if uid in jobs])
    finally:
        journal.close()


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
                        terminate: bool, out: list[DispyJob], arrived_not: list[tuple]) -> None:
    """The jobs sent to one node (or dispyscheduler). One it has no record of although
    it is the same node (not restarted since) never arrived: it goes to ``arrived_not``
    to be run, if its arguments were kept."""
    ip, port, session, key, certfile, keyfile = target
    pending = {row[0]: _recovered(row) for row in rows}
    by_uid = {row[0]: row for row in rows}
    out.extend(pending.values())
    where = f"{ip}:{port}"
    welcome: dict = {}

    def done(uid: str, result: messages.Done, bufs: list[bytes]) -> None:
        job = pending.pop(uid, None)
        if job is not None:
            _fill(job, result, bufs)

    def unknown(uid: str) -> None:
        job = pending.pop(uid, None)
        row = by_uid[uid]
        peer = row[8]
        if job is not None and peer is not None and row[7] is not None and \
                peer in (welcome.get("node_id"), welcome.get("scheduler_id")):
            out.remove(job)
            arrived_not.append(row)
        elif job is not None:
            _end(job, DispyJob.Abandoned, f"Abandoned: node {where} has no record of this"
                 " job (it was restarted while the job ran)")

    hello = {"client_id": "recover_jobs", "client_name": "recover_jobs", "session": session}
    reason = await fetch_results(ip, port, hello, bytes(key), certfile, keyfile,
                                 {row[0]: row[1] for row in rows}, deadline, terminate,
                                 done, unknown, welcome)
    if reason is not None and pending:
        _give_up(pending, reason)


async def fetch_results(ip: str, port: int, hello: dict, key: bytes, certfile: str | None,
                        keyfile: str | None, cids: dict[str, str], deadline: float | None,
                        terminate: bool,
                        done: Callable[[str, messages.Done, list[bytes]], None],
                        unknown: Callable[[str], None],
                        welcome: dict | None = None) -> str | None:
    """Reconnect to a node as an earlier session (``hello`` carries its key) and collect
    the results of the jobs ``cids`` names (uid -> computation id) as the node sent them:
    ``done`` for each result (acknowledged to the node), ``unknown`` for each job the
    node has no record of. Running jobs are waited for until ``deadline`` (then cancelled
    if ``terminate``). When every job is answered, the computations are closed on the
    node. Returns why it stopped early (connection), else None; jobs not answered by
    then (still running at the deadline) are left as they are. ``welcome`` is given
    what the node said of itself (its id tells whether it restarted)."""
    where = f"{ip}:{port}"
    try:
        ctx = tls.client_context(certfile, keyfile)
        conn = await Connection.open(ip, port, ctx, config.MsgTimeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return f"node {where} could not be reached: {why(exc, 'timed out')}"
    try:
        said = await client_handshake(conn, key, hello, config.MsgTimeout,
                                      Limits(max_buffer=config.MaxFrameSize))
    except (OSError, asyncio.TimeoutError, HandshakeError, FrameError, ConnectionClosed) as exc:
        conn.close()
        return f"node {where} could not be reached: {why(exc, 'timed out')}"
    if welcome is not None:
        welcome.update(said)
    pending = set(cids)
    conn.send(messages.JobsQuery(uids=list(pending), reply="q"))
    terminated = False
    try:
        while pending:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                if not terminate or terminated:
                    break
                terminated = True  # cancel what is left, then wait for those results
                for uid in pending:
                    conn.send(messages.Cancel(cid=cids[uid], uid=uid))
                deadline = time.monotonic() + config.MsgTimeout
                continue
            try:
                header, bufs = await conn.recv(wait)
            except asyncio.TimeoutError:
                continue
            msg, bufs = _result_or_reply(header, bufs, where)
            if isinstance(msg, messages.Done):
                if msg.uid in pending:
                    pending.discard(msg.uid)
                    done(msg.uid, msg, bufs)  # kept (durably, if it must be) before the ack
                conn.send(messages.Ack(uids=[msg.uid]))
            elif isinstance(msg, messages.Reply) and msg.reply == "q":
                for uid in msg.unknown or ():
                    if uid in pending:
                        pending.discard(uid)
                        unknown(uid)
        if not pending:
            for cid in sorted(set(cids.values())):
                conn.send(messages.Close(cid=cid, terminate=terminate))
        await within(conn.drain(), config.MsgTimeout)
    except (OSError, ConnectionClosed, FrameError, asyncio.TimeoutError) as exc:
        return f"connection to node {where} lost: {why(exc)}"
    finally:
        conn.close()
    return None


def _result_or_reply(header: dict, bufs: list[bytes],
                     where: str) -> tuple[messages.Record | None, list[bytes]]:
    """A frame from the node while results are fetched: a result, a reply, or None. A
    malformed result of a job ends it Terminated with the reason (never a hang)."""
    try:
        if header.get("op") == "done":
            return messages.Done.parse(header), bufs
        return (messages.parse_reply(header) if header.get("op") == "reply" else None), bufs
    except messages.MessageError as exc:
        log.warning("recover_jobs: node %s sent a malformed frame: %s", where, exc)
        uid = header.get("uid")
        if header.get("op") != "done" or not isinstance(uid, str):
            return None, bufs
        return messages.Done(uid=uid, status=DispyJob.Terminated, exception=(
            f"Terminated: node {where} sent a malformed result: {exc}")), []


def _fill(job: DispyJob, done: messages.Done, bufs: list[bytes]) -> None:
    job.status, job.result, job.stdout, job.stderr, job.exception = decode_result(done, bufs)
    job.start_time = done.start_time or job.start_time
    job.end_time = done.end_time or time.time()
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
