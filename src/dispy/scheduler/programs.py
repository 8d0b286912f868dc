"""Where dispyscheduler's jobs end: at the programs that submitted them.

dispyscheduler faces the nodes with the engine a JobCluster uses (client/engine.py:
discovery, one connection per node, setup, dispatch by the one scheduling core, node
failure), run on the scheduler's loop, and gives it ``ProgramSink`` as its job sink
(client/sink.py): results, provisional results, files and status changes go to the
program that submitted the job, as the bytes the node sent.
The scheduler never unpickles a client's arguments or a node's results, and never runs
a client's code: a NodeAllocate whose ``allocate`` is overridden is asked in the client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from ..client.engine import Engine
from ..client.job import DispyJob
from ..client.links import NodeLink
from ..client.nodes import DispyNode, NodeAllocate
from ..client.shipping import FileSpec, Package
from ..client.sink import allocated_cpus
from ..fsafe import safe_join
from ..log import last_line
from ..scheduling.nodesetup import Setup
from ..wire import messages, netif
from .journal import SchedulerJournal

log = logging.getLogger("dispy.scheduler")


class RelayedJob(DispyJob):
    """A client's job as the scheduler holds it: arguments and results stay bytes."""

    __slots__ = ("client_uid",)
    #: the job's uid at its client program
    client_uid: str


class SharedAlloc(NodeAllocate):
    """A client's NodeAllocate as plain data: pattern, port, CPUs, setup_args (pickled by
    the client, passed on unopened) and the relative paths of its per-node files."""

    def __init__(self, spec: dict, setup_blob: bytes, node_port: int) -> None:
        # no port from the client: the nodes' port is the scheduler's --node_port
        super().__init__(str(spec["host"]), spec.get("port") or node_port,
                         int(spec.get("cpus", 0)))
        self.index = int(spec.get("index", 0))
        self.custom = bool(spec.get("custom"))
        self.relpaths = [str(p) for p in spec.get("depends", ())]
        self.setup_blob = setup_blob

    @staticmethod
    def _address(host: str) -> str:
        # as the program resolved it: no lookup on the scheduler's loop (a name the
        # program could not resolve matches no node here either)
        return netif.literal(host) or host


class ClusterJournal:
    """The engine's journal calls for one computation, in the scheduler's journal (keyed
    by the program's session and job uids; None: the scheduler keeps no journal)."""

    def __init__(self, journal: SchedulerJournal | None, sid: str) -> None:
        self.journal = journal
        self.sid = sid
        self.path = journal.path if journal is not None else ""

    def queued(self, job: Any, cid: str) -> None:
        if self.journal is not None:
            self.journal.requeued(self.sid, job.client_uid)

    def dispatched(self, job: Any, cid: str, ip: str, port: int,
                   peer: str | None = None) -> None:
        if self.journal is not None:
            self.journal.sent(self.sid, job.client_uid, ip, port, cid, job._uid)

    def finished(self, uid: str) -> None:
        pass  # the result is journaled where it goes to the program (ProgramSink._end)

    def flush(self) -> None:
        if self.journal is not None:
            self.journal.flush()

    def remove_cluster(self, cid: str) -> bool:
        return False


class RemoteCluster:
    """A client's computation as the engine sees a cluster."""

    def __init__(self, session: Any, client_cid: str, cid: str,
                 spec: messages.SharedCompute, bundle: bytes, allocs: list[SharedAlloc],
                 store: str, node_profile: Any,
                 pulse_interval: float | None, ping_interval: float | None) -> None:
        self.session = session
        self.client_cid = client_cid
        self.cid = cid
        self.cluster = self  # what a NodeAllocate's allocate() is given
        self.name = spec.name
        self.exclusive = spec.exclusive
        self.reentrant = spec.reentrant
        self.dest_path = spec.dest_path or None
        self.cleanup = spec.cleanup
        self.allocs = allocs
        self.store = store
        files = [FileSpec(safe_join(store, p), p) for p in spec.files]
        self.package = Package(bundle, files, spec.program or None)
        self.profile = node_profile
        self.pulse_interval = pulse_interval
        self.ping_interval = ping_interval
        self.recover_file = None
        self.callback = self.cluster_status = None
        self.journal: Any = ClusterJournal(session.journal, session.sid)
        self.jobs: dict[str, RelayedJob] = {}
        self.by_client_uid: dict[str, RelayedJob] = {}
        self.nodes: dict[tuple, DispyNode] = {}
        self.node_cpus: dict[tuple, int] = {}
        #: node key -> (cpus, setup_args blob, relpaths) the client's allocate() chose
        self.per_node: dict[tuple, tuple[int, bytes, list[str]]] = {}
        self.failed: str | None = None
        #: file names already refused (logged once, not once per chunk)
        self.refused_files: set[str] = set()
        #: how its cleanup failed on nodes, for the program (with its Closed)
        self.cleanup_problems: list[str] = []
        self.created = time.monotonic()
        self.stall_reported = 0.0
        #: the compute request as the program sent it (header, buffers), for the journal
        self.request: tuple[dict, list[bytes]] | None = None

    def node_files(self, alloc: SharedAlloc) -> list[FileSpec]:
        return [FileSpec(safe_join(self.store, p), p) for p in alloc.relpaths]

    def job_finished(self) -> None:
        pass

    def describe(self) -> str:
        return f"{self.name!r} of {self.session.describe()}"


def node_info(node: DispyNode) -> dict:
    """A node as the clients see it (JSON)."""
    avail = node.avail_info._asdict() if node.avail_info is not None else None
    return {"ip": node.ip_addr, "port": node.port, "name": node.name, "cpus": node.cpus,
            "busy": node.busy, "jobs_done": node.jobs_done, "cpu_time": node.cpu_time,
            "platform": node.platform, "avail_info": avail, "tx": node.tx, "rx": node.rx}


def node_engine(port: int, ip_addrs: list[str] | None, policy: str,
                loop: asyncio.AbstractEventLoop, extra_nodes: list[str] | None = None,
                msg_timeout: float | None = None) -> tuple[Engine, ProgramSink]:
    """dispyscheduler's engine facing the nodes, and its sink."""
    sink = ProgramSink()
    engine = sink.engine = Engine(port, ip_addrs, loop=loop, policy=policy,
                                  msg_timeout=msg_timeout, sink=sink)
    engine.client_name = f"dispyscheduler@{engine.client_name}"
    #: nodes named with -n: discovery also asks them directly (other networks)
    engine.finder.extra_nodes = list(extra_nodes or [])
    return engine, sink


class ProgramSink:
    """dispyscheduler's job sink (client/sink.py): every event goes to the job's program."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        #: sees every job and node event of every computation (--httpd's monitor)
        self.observer: Callable[[Any, int, Any, Any], None] | None = None
        #: the scheduler's journal (scheduler/journal.py), committed where a client
        #: engine commits its recover files
        self.journal: SchedulerJournal | None = None
        #: jobs ended, by final status, and --metrics_port's histogram (metrics.py)
        self.ended: dict[int, int] = {}
        self.metrics: Any = None

    def _links(self) -> dict:
        assert self.engine is not None
        return self.engine.links

    # ---- journal --------------------------------------------------------------------

    def journal_for(self, cs: Any) -> Any:
        return cs.journal

    def flush_journals(self) -> None:
        if self.journal is not None:
            self.journal.flush()

    def forget_journal(self, journal: Any) -> None:
        pass  # one journal for every program, kept by the daemon

    # ---- allocation: plain patterns here, overridden allocate() in the client -----

    def allocates_later(self, link: NodeLink, cs: Any, alloc: Any) -> bool:
        if not alloc.custom:
            return False
        asyncio.get_running_loop().create_task(self._ask_client(link, cs, alloc))
        return True

    async def _ask_client(self, link: NodeLink, cs: RemoteCluster, alloc: SharedAlloc) -> None:
        if link.node is None:  # lost before we asked
            return
        answer = await cs.session.request(messages.AskAllocate(
            cid=cs.client_cid, alloc=alloc.index, node=node_info(link.node)))
        engine = self.engine
        if engine is None or link.node is None or \
                engine.setups.state(link.key, cs.cid) is not Setup.SETTING_UP:
            return  # closed or lost while the program was asked
        setups = engine.setups
        reply, bufs = _allocated(answer)
        if reply is None or reply.cpus is None or reply.cpus <= 0 or not bufs:
            setups.allocated(link.key, cs.cid, 0, 0)
            return
        cpus, relpaths = reply.cpus, list(reply.depends or ())
        try:
            for relpath in relpaths:
                safe_join(cs.store, relpath)
        except ValueError as exc:
            log.warning("%s: NodeAllocate.allocate for %s named a file outside its"
                        " directory: %s", cs.describe(), link.describe(), exc)
            setups.allocated(link.key, cs.cid, 0, 0, "invalid file name")
            return
        cs.per_node[link.key] = (cpus, bufs[0], relpaths)
        cs.node_cpus[link.key] = setups.allocated(link.key, cs.cid, cpus, link.node.cpus)
        await engine.set_up(link, cs, alloc)

    def allocate(self, cs: Any, link: NodeLink, alloc: Any) -> int:
        chosen = cs.per_node.get(link.key)
        return chosen[0] if chosen is not None else allocated_cpus(cs, link, alloc)

    def setup_payload(self, cs: Any, link: NodeLink, alloc: Any) -> tuple[list, bytes]:
        chosen = cs.per_node.get(link.key)
        blob, relpaths = (chosen[1], chosen[2]) if chosen else (alloc.setup_blob, alloc.relpaths)
        files = list(cs.package.files) + [FileSpec(safe_join(cs.store, p), p)
                                          for p in relpaths]
        return files, blob

    # ---- the job's life ends at its client ----------------------------------------

    def deliver(self, job: Any, done: messages.Done, bufs: list[bytes]) -> None:
        link = self._links().get(job._key)
        self._end(job, messages.JobResult.of(done, job.client_uid, job._cluster.client_cid,
                                             link.ip if link else None,
                                             link.port if link else None), bufs)

    def finish(self, job: Any, status: int, reason: str) -> None:
        # the scheduler's own verdicts (cancelled, node lost): a reason, no result
        cs = job._cluster
        self._end(job, messages.JobResult(
            uid=job.client_uid, cid=cs.client_cid, status=status, exception=reason,
            start_time=job.start_time, end_time=time.time()), [])

    def _end(self, job: Any, done: messages.JobResult, bufs: list[bytes]) -> None:
        if job._final:
            return
        job._final = True
        job._args = job._deps = None
        cs = job._cluster
        cs.jobs.pop(job._uid, None)
        cs.by_client_uid.pop(job.client_uid, None)
        status = done.status if done.status is not None else DispyJob.Finished
        self.ended[status] = self.ended.get(status, 0) + 1
        if self.metrics is not None and done.start_time and done.end_time:
            self.metrics.job_ran(done.end_time - done.start_time)
        if self.observer is not None:
            self.observer(cs, status, None, job)
        cs.session.result(done, bufs)  # journaled there
        cs.session.drop_job_files(job.client_uid)

    def job_event(self, job: DispyJob) -> None:
        assert isinstance(job, RelayedJob)  # the only jobs the scheduler's engine holds
        if job._final or (job.status == DispyJob.Created and job.start_time is None):
            return  # the client knows a job it just submitted is queued
        cs = job._cluster
        link = self._links().get(job._key) if job.status == DispyJob.Running else None
        cs.session.send(messages.JobStatus(
            cid=cs.client_cid, uid=job.client_uid, status=job.status,
            start_time=job.start_time, ip=link.ip if link else None,
            port=link.port if link else None))

    def provisional(self, job: DispyJob | None, bufs: list[bytes]) -> None:
        if job is None or job._final:
            return
        assert isinstance(job, RelayedJob)
        cs = job._cluster
        cs.session.send(messages.Provisional(cid=cs.client_cid, uid=job.client_uid), bufs)

    def cleanup_failed(self, cs: Any, source: str, problem: str) -> None:
        log.warning("%s: cleanup of %s failed: %s", source,
                    cs.describe() if cs is not None else "?", last_line(problem))
        if cs is not None:
            cs.cleanup_problems.append(f"{source}:\n{problem.rstrip()}"[-messages.MAX_PROBLEM:])

    def file_from_node(self, source: str, msg: messages.SendFile, bufs: list[bytes]) -> None:
        assert self.engine is not None
        cs = self.engine.clusters.get(msg.cid)
        if cs is None or not cs.session.send(dataclasses.replace(msg, cid=cs.client_cid),
                                             bufs):
            log.warning("file %r from %s not passed on: its client is not connected",
                        msg.path, source)

    def status(self, cs: Any, status: int, node: Any, job: Any) -> None:
        if self.observer is not None:
            self.observer(cs, status, node, job)
        if node is not None:
            cs.session.send(messages.NodeEvent(cid=cs.client_cid, status=status,
                                               node=node_info(node)))

    def reports_stall(self, cs: Any) -> bool:
        return cs.session.conn is not None  # nobody to tell while its program is away


def _allocated(answer: tuple | None) -> tuple[messages.Reply | None, list[bytes]]:
    """A program's answer to AskAllocate: its reply (CPUs, files) and the setup_args
    blob; None when there is none or it is malformed (the node is then not used)."""
    if answer is None:
        return None, []
    try:
        return messages.parse_reply(answer[0]), list(answer[1])
    except messages.MessageError as exc:
        log.warning("a program's NodeAllocate answer is malformed: %s", exc)
        return None, []
