"""SharedJobCluster: a JobCluster whose jobs go through a dispyscheduler.

Several programs then share the same nodes at once. The scheduler matches jobs to node
CPUs and passes results, provisional results, files and node events back. The job life
cycle, callbacks and the recover file are the same as JobCluster's (the jobs are
journaled as sent to the scheduler, so ``recover_jobs`` fetches them from it).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import cloudpickle

from .. import config
from ..wire import messages, netif
from .cluster import JobCluster, _call_async
from .job import DispyJob
from .nodes import ClusterStatus, DispyNode, node_address
from .scheduler_link import Admission, SchedulerLink, _relpath, alloc_specs

log = logging.getLogger("dispy")

#: Seconds after a cluster starts during which the scheduler may still be finding and
#: setting up a node that matches one of its patterns.
SHARED_DISCOVERY_WAIT = 5.0


def _default_scheduler(ip_addr: list[str] | None) -> str:
    """The spec's default: this host (the address it would use, else loopback)."""
    try:
        ifs = netif.select(ip_addr)
        return ifs[0].address if ip_addr and ifs else "127.0.0.1"
    except (OSError, ValueError, IndexError):
        return "127.0.0.1"


class SharedJobCluster(JobCluster):
    """A JobCluster that shares its nodes with other programs through ``dispyscheduler``.

    ``secret``, ``keyfile`` and ``certfile`` are the scheduler's cluster secret and
    certificates; the nodes' ones are the scheduler's business. ``exclusive=True`` waits
    until the running computations close, then has every node to itself.
    """

    _NO_SECRET = ("SharedJobCluster %r has no secret: anyone who can reach the scheduler"
                  " can run code on its nodes and read this program's jobs; give"
                  " secret=... (dispyscheduler --cluster_secret)")

    def __init__(self, computation: Any, nodes: Any = None, depends: list | None = None,
                 callback: Any = None, cluster_status: Any = None, ip_addr: Any = None,
                 port: int | None = None, scheduler_node: str | None = None,
                 scheduler_port: int | None = None, ext_ip_addr: Any = None,
                 dest_path: str | None = None, loglevel: int | None = None,
                 setup: Any = None, cleanup: Any = True, reentrant: bool = False,
                 exclusive: bool = False, secret: str = "", keyfile: str | None = None,
                 certfile: str | None = None, recover_file: str | None = None, *,
                 host: Any = None, ext_host: Any = None, dispy_port: int | None = None,
                 client_port: int | None = None, scheduler_host: str | None = None,
                 job_status: Any = None, poll_interval: float | None = None,
                 pulse_interval: float | None = None, ping_interval: float | None = None,
                 node_port: int | None = None, _resume: dict | None = None) -> None:
        if exclusive not in (True, False):
            raise ValueError("exclusive must be True or False")
        if pulse_interval is not None or ping_interval is not None:
            log.warning("SharedJobCluster: pulse_interval and ping_interval are the"
                        " scheduler's (dispyscheduler --pulse_interval / --ping_interval)")
        scheduler_node = scheduler_node or scheduler_host
        ip = ip_addr if ip_addr is not None else host
        ips = [ip] if isinstance(ip, str) else ip
        self._scheduler = (netif.resolve(scheduler_node) if scheduler_node
                           else _default_scheduler(ips),
                           int(scheduler_port or (dispy_port + 2 if dispy_port
                                                  else config.SharedSchedulerPort)))
        self._exclusive = exclusive
        self._link: SchedulerLink | None = None
        super().__init__(computation, nodes=nodes, depends=depends, callback=callback,
                         cluster_status=cluster_status, ip_addr=ip_addr, ext_ip_addr=ext_ip_addr,
                         port=port if port is not None else client_port,
                         # 0: no port given, the scheduler's --node_port applies
                         node_port=node_port or (dispy_port + 1 if dispy_port else 0),
                         recover_file=recover_file, dest_path=dest_path, loglevel=loglevel,
                         setup=setup, cleanup=cleanup, reentrant=reentrant, secret=secret,
                         keyfile=keyfile, certfile=certfile, host=host, ext_host=ext_host,
                         job_status=job_status, _resume=_resume)

    def _start(self) -> None:
        state = self._state
        state.exclusive = self._exclusive
        engine = self._engine

        async def start() -> Admission:
            # not in engine.clusters: the engine must never use the nodes for it directly
            state.scheduler = self._scheduler  # recover_jobs reruns its jobs through it
            state.journal = engine.local.journal_for(state)
            ip, port = self._scheduler
            key = (ip, port, state.profile)
            link = engine.scheduler_links.get(key)
            if link is None:
                link = engine.scheduler_links[key] = SchedulerLink(engine, ip, port,
                                                                   state.profile)
            self._link = link
            self._submit = link.submit
            try:
                return await link.add_cluster(state)
            except ConnectionError as exc:
                return messages.Refused(cid=state.cid, reason=str(exc))

        answer = engine.call(start()).result()
        if isinstance(answer, messages.Refused):
            self._closed = True
            engine.call(_call_async(self._forget)).result()
            raise ConnectionError(f"SharedJobCluster {self.name!r}: {answer.reason}")
        if isinstance(answer, messages.Waiting):
            log.info("%r: %s", self.name, answer.reason)

    def _forget(self) -> None:
        engine = self._engine
        journal = getattr(self._state, "journal", None)
        if journal is not None and journal.remove_cluster(self._state.cid):
            engine.local.forget_journal(journal)

    def _queue(self, job: DispyJob) -> None:
        assert self._link is not None
        self._engine.post(self._submit, job)

    def _close_on_loop(self, terminate: bool) -> Any:
        assert self._link is not None
        return self._link.close_cluster(self._state, terminate)

    def cancel(self, job: DispyJob) -> int:
        assert self._link is not None
        return self._on_loop(self._link.cancel, job)

    # ---- nodes: they are the scheduler's; we know what it told us ----------------------

    def _find_node(self, node: Any, what: str = "") -> DispyNode | None:
        """The node as the scheduler reported it set up. One that ``nodes`` names (or a
        pattern matches, while the scheduler may still be finding it) is waited for, at
        most ``config.NodeSetupWait`` seconds."""
        ip, port = node_address(node)

        async def find(ip: str) -> tuple[DispyNode | None, bool]:
            for (nip, nport), found in self._state.nodes.items():
                if nip == ip and (port is None or nport == port):
                    return found, False
            allocs = [a for a in self._state.allocs if a.matches(ip, port)]
            young = time.monotonic() - self._state.created < SHARED_DISCOVERY_WAIT
            return None, any(not a.wildcard or young for a in allocs)

        found = None
        deadline = time.monotonic() + config.NodeSetupWait
        while ip and not self._closed:
            found, pending = self._engine.call(find(ip)).result()
            if found is not None or not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if found is None and what:
            log.error("cluster %r: %s(%r): not a node of this cluster", self._name, what, node)
        return found

    def submit_node(self, node: Any, *args: Any, **kwargs: Any) -> DispyJob | None:
        found = self._find_node(node)
        if found is None:
            log.error("cluster %r: node %s is not set up for this cluster; job not submitted",
                      self._name, node)
            return None
        job = self._make_job(args, kwargs)
        if job is not None:
            job._pin = (found.ip_addr, found.port)
            self._queue(job)
        return job

    def node_jobs(self, node: Any, from_node: bool = False) -> list[DispyJob] | int:
        found = self._find_node(node, "node_jobs")
        if found is None:
            return -1
        key = (found.ip_addr, found.port)

        async def jobs() -> list[DispyJob]:
            return [job for job in self._state.jobs.values()
                    if job._key == key and job.status in (DispyJob.Running,
                                                          DispyJob.ProvisionalResult)]

        return self._engine.call(jobs()).result()

    def set_node_cpus(self, node: Any, cpus: int) -> int:
        """As JobCluster's when dispyscheduler runs with ``--cooperative`` (or the cluster
        is exclusive); otherwise refused (-1, logged): the node is shared."""
        found = self._find_node(node, "set_node_cpus")
        return -1 if found is None else self._control(
            messages.SetNodeCpus(cid=self._state.cid, node=[found.ip_addr, found.port],
                                 cpus=int(cpus)))

    def _control(self, request: messages.NodeControl, bufs: list | tuple = ()) -> int:
        assert self._link is not None
        answer = self._engine.call(self._link.request(request, bufs)).result()
        if answer is None:
            log.error("cluster %r: %s: no answer from the scheduler", self._name, request.op)
            return -1
        rc = answer.rc if answer.rc is not None else -1
        if rc != 0 and answer.reason:
            log.error("cluster %r: %s: %s", self._name, request.op, answer.reason)
        return rc

    def allocate_node(self, node: Any) -> int:
        allocs = self._allocations(node)
        if allocs is None:
            return -1

        async def add() -> int:
            first = len(self._state.allocs)
            self._state.allocs.extend(allocs)  # the scheduler asks about them by index
            return first

        first = self._engine.call(add()).result()
        specs, blobs = alloc_specs(allocs, first)
        return self._control(messages.AllocateNode(cid=self._state.cid, allocs=specs), blobs)

    def deallocate_node(self, node: Any) -> int:
        found = self._find_node(node, "deallocate_node")
        return -1 if found is None else self._control(
            messages.DeallocateNode(cid=self._state.cid, node=[found.ip_addr, found.port]))

    def close_node(self, node: Any, terminate_pending: bool = False) -> int:
        found = self._find_node(node, "close_node")
        return -1 if found is None else self._control(
            messages.CloseNode(cid=self._state.cid, node=[found.ip_addr, found.port],
                               terminate=terminate_pending))

    def resetup_node(self, node: Any, terminate_pending: bool = False) -> int:
        """As JobCluster's: the NodeAllocate's ``allocate`` is asked again here, and setup
        runs there with the current ``setup_args`` and ``depends``."""
        found = self._find_node(node, "resetup_node")
        if found is None:
            return -1
        alloc = next((a for a in self._state.allocs if a.matches(found.ip_addr, found.port)),
                     None)
        if alloc is None:
            return -1
        try:
            cpus = alloc.allocate(self, found.ip_addr, found.name, found.cpus,
                                  found.avail_info, found.platform)
        except Exception:
            log.exception("NodeAllocate.allocate failed for node %s", found.ip_addr)
            cpus = 0
        if not isinstance(cpus, int) or cpus <= 0:
            return self.close_node(node, terminate_pending)
        assert self._link is not None
        depends = [_relpath(p) for p in alloc.depends]
        for path, rel in zip(alloc.depends, depends, strict=True):
            if self._engine.call(self._link.upload(self._state.cid, os.path.abspath(path),
                                                   rel)).result() is not None:
                return -1
        return self._control(messages.ResetupNode(cid=self._state.cid,
                                                  node=[found.ip_addr, found.port],
                                                  terminate=terminate_pending, cpus=cpus,
                                                  depends=depends),
                             [cloudpickle.dumps(alloc.setup_args)])

    def send_file(self, path: str, node: Any) -> int:
        if not os.path.isfile(path):
            log.error("cluster %r: send_file: %s is not a file", self._name, path)
            return -1
        found = self._find_node(node, "send_file")
        if found is None:
            return -1
        assert self._link is not None
        reason = self._engine.call(self._link.upload(
            self._state.cid, os.path.abspath(path), os.path.basename(path),
            [found.ip_addr, found.port], self._engine.new_uid())).result()
        if reason is None:
            return 0
        log.error("send_file(%s, %s) failed: %s", path, found.ip_addr, reason)
        return -1

    def discover_nodes(self, nodes: Any) -> int:
        """The scheduler finds nodes; asking for more is allocate_node."""
        return self.allocate_node(nodes)

    def status(self) -> ClusterStatus:
        async def get() -> ClusterStatus:
            pending = sum(1 for job in self._state.jobs.values()
                          if job.status == DispyJob.Created)
            return ClusterStatus(list(self._state.nodes.values()), pending)

        return self._engine.call(get()).result()

