"""A restarted dispyscheduler takes up where its journal says the last run stopped.

Programs' sessions come back (a program that reconnects with its session key finds
its computations and jobs), their computations are scheduled again, jobs that were
queued are queued again, and results not yet acknowledged are sent when their program
reconnects. Jobs the last run had sent to nodes are fetched from those nodes under the
node session of that run: their results go to their programs as if nothing happened;
a job its node no longer knows (the node was restarted, or is gone) runs again if its
computation is reentrant, else ends Abandoned with the reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ..client.job import DispyJob
from ..client.recover import fetch_results
from ..client.shipping import FileSpec
from ..fsafe import safe_join
from ..wire import auth, messages
from .clients import ClientService, ClientSession
from .journal import SavedJob, SavedState, SchedulerJournal

log = logging.getLogger("dispy.scheduler")


def restore(state: SavedState, journal: SchedulerJournal, service: ClientService,
            sessions: dict[str, ClientSession], root: str, msg_timeout: float,
            spawn: Callable[[Any], object]) -> None:
    """Rebuild sessions, computations, queued jobs and results; start fetching the jobs
    that were on nodes (tasks given to ``spawn``)."""
    for sid, client_id, name, addr, where in state.sessions:
        try:  # its directory was one the scheduler named, under its own root
            home = safe_join(root, os.path.basename(where))
        except ValueError:
            continue
        sessions[sid] = ClientSession(sid, client_id, name, addr, home, msg_timeout, journal)
    for sid, ccid, header, bufs in state.computations:
        session = sessions.get(sid)
        if session is None:
            continue
        compute = _record(header, bufs, "compute")
        if isinstance(compute, messages.SharedCompute):
            service.compute(session, compute, bufs)
            service.schedule(session, messages.Schedule(cid=ccid), [])
    for sid, uid, header, bufs in state.results:
        session = sessions.get(sid)
        if session is not None:
            session.undelivered[uid] = (header, bufs)
    groups: dict[tuple, list[SavedJob]] = {}
    for job in state.jobs:
        session = sessions.get(job.sid)
        if session is None:
            continue
        if job.sent is None or job.sent[0] not in state.boots:
            requeue(service, session, job)
        else:
            groups.setdefault(job.sent[:3], []).append(job)
    for (boot, ip, port), jobs in groups.items():
        for job in jobs:
            sessions[job.sid].recovering[job.uid] = f"{ip}:{port}"
        client_id, key = state.boots[boot]
        spawn(fetch(service, sessions, journal, (client_id, key), ip, port, jobs))
    journal.forget_boots({boot for boot, _, _ in groups})
    journal.flush()
    if state.sessions:
        log.info("journal: %d program(s), %d computation(s), %d job(s) (%d on nodes),"
                 " %d result(s) to deliver", len(state.sessions), len(state.computations),
                 len(state.jobs), sum(len(g) for g in groups.values()), len(state.results))


def _record(header: dict, bufs: list[bytes], op: str) -> messages.Record | None:
    """A journaled request as its record: checked as when it came (the journal holds the
    header as the program sent it, or as its record gave it)."""
    try:
        return messages.parse_request(header, bufs, messages.SCHEDULER_REQUESTS, op)
    except messages.MessageError as exc:
        log.warning("journal: a %r request not restored: %s", op, exc)
        return None


def requeue(service: ClientService, session: ClientSession, job: SavedJob) -> None:
    """A job runs (again) as if its program had just submitted it."""
    session.recovering.pop(job.uid, None)
    if job.files:
        session.job_files[job.uid] = [FileSpec(local, rel) for local, rel in job.files]
    request = _record(job.header, list(job.bufs), "job")
    if isinstance(request, messages.Job):
        service.job(session, request, list(job.bufs))
        return
    session.result(messages.JobResult(
        uid=job.uid, cid=job.ccid, status=DispyJob.Abandoned,
        exception="Abandoned: the scheduler restarted and its journal's record of the"
                  " job is unreadable"), [])


async def fetch(service: ClientService, sessions: dict[str, ClientSession],
                journal: SchedulerJournal, identity: tuple[str, str], ip: str, port: int,
                jobs: list[SavedJob]) -> None:
    """The results of jobs an earlier run sent to node ``ip:port``."""
    by_node_uid = {job.sent[4]: job for job in jobs if job.sent is not None}
    where = f"{ip}:{port}"

    def done(node_uid: str, done: messages.Done, bufs: list[bytes]) -> None:
        job = by_node_uid.pop(node_uid)
        session = sessions.get(job.sid)
        if session is None or job.uid not in session.recovering:
            return
        result = messages.JobResult.of(done, job.uid, job.ccid, ip, port)
        session.recovering.pop(job.uid, None)
        session.result(result, bufs)
        journal.flush()  # before the node is told it may forget the result

    def unknown(node_uid: str) -> None:
        lost(by_node_uid.pop(node_uid), f"node {where} has no record of it (it was"
             " restarted while the job ran)")

    def lost(job: SavedJob, reason: str) -> None:
        session = sessions.get(job.sid)
        if session is None or job.uid not in session.recovering:
            return
        cs = session.clusters.get(job.ccid)
        if cs is not None and cs.reentrant:
            log.info("job %s of %s runs again: %s", job.uid, cs.describe(), reason)
            requeue(service, session, job)
            return
        session.recovering.pop(job.uid, None)
        session.result(messages.JobResult(
            uid=job.uid, cid=job.ccid, status=DispyJob.Abandoned,
            exception=f"Abandoned: the scheduler restarted and {reason}"), [])

    client_id, key = identity
    hello = {"client_id": client_id, "client_name": "dispyscheduler (restarted)",
             "session": key}
    profile = service.node_profile
    cids = {uid: job.sent[3] for uid, job in by_node_uid.items() if job.sent is not None}
    reason = await fetch_results(ip, port, hello, auth.key_of(profile.secret),
                                 profile.certfile, profile.keyfile, cids, None, False,
                                 done, unknown)
    for job in list(by_node_uid.values()):
        lost(job, reason or f"node {where} did not report it")
    service.engine.dispatch()
    journal.flush()
