"""JobCluster: the user's handle on a computation distributed over nodes."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
import types
from typing import Any, Literal

from .. import config
from ..log import logger
from . import (
    futures,  # noqa: F401  (gives the jobs made here their ``future``)
    joboptions,
    shipping,
)
from .engine import Engine
from .job import DispyJob
from .journal import Journal
from .links import Profile
from .nodes import ClusterStatus, DispyNode, NodeAllocate, node_address, to_allocations
from .status import ClusterStats, NodeStats, cluster_stats, format_status

log = logging.getLogger("dispy")
_cids = itertools.count(1)


class _ClusterState:
    """What the engine keeps per cluster (touched on the engine thread only)."""

    def __init__(self, cluster: JobCluster, *, cid: str, name: str,
                 allocs: list[NodeAllocate], package: shipping.Package, profile: Profile,
                 callback: Any, cluster_status: Any, reentrant: bool,
                 pulse_interval: float | None, ping_interval: float | None,
                 dest_path: str | None, cleanup: Any, ext_ip_addr: list[str] | None,
                 recover_file: str | None) -> None:
        self.cluster = cluster
        self.cid = cid
        self.name = name
        self.allocs = allocs
        self.package = package
        self.profile = profile
        self.callback = callback
        self.cluster_status = cluster_status
        self.reentrant = reentrant
        self.pulse_interval = pulse_interval
        self.ping_interval = ping_interval
        self.dest_path = dest_path
        #: True, False or the user's cleanup function
        self.cleanup = cleanup
        self.ext_ip_addr = ext_ip_addr
        self.recover_file = recover_file
        #: SharedJobCluster only: the scheduler gives it nodes of its own
        self.exclusive = False
        #: SharedJobCluster only: its dispyscheduler (ip, port), for recover_jobs
        self.scheduler: tuple[str, int] | None = None
        #: set by the engine (or the scheduler link) when the cluster is added
        self.journal: Journal | None = None
        self.jobs: dict[str, DispyJob] = {}
        self.nodes: dict[tuple, DispyNode] = {}
        self.node_cpus: dict[tuple, int] = {}
        self.created = time.monotonic()
        self.stall_reported = 0.0
        #: jobs that ended other than Finished (for progress bars)
        self.failed = 0
        #: this cluster's own work per node, for print_status (node key -> NodeStats)
        self.stats: dict[tuple, NodeStats] = {}

    def node_files(self, alloc: NodeAllocate) -> list[shipping.FileSpec]:
        return [shipping.FileSpec(os.path.abspath(p), shipping.relpath_for(p))
                for p in alloc.depends]

    def job_finished(self) -> None:
        self.cluster._job_finished()


def _check_callable(fn: Any, what: str) -> Any:
    if fn is not None and not callable(fn):
        raise ValueError(f"{what} must be a function")
    return fn


class JobCluster:
    """Run ``computation`` on the nodes; ``submit`` returns a :class:`DispyJob` at once."""

    #: said once per cluster created without a secret
    _NO_SECRET = ("cluster %r has no secret: anyone who can reach its nodes can run code"
                  " on them, and anyone who answers as a node gets its computation and"
                  " jobs; give secret=... (and dispynode -s)")

    def __init__(
        self,
        computation: Any,
        nodes: Any = None,
        depends: list | None = None,
        callback: Any = None,
        cluster_status: Any = None,
        ip_addr: Any = None,
        ext_ip_addr: Any = None,
        port: int | None = None,
        node_port: int | None = None,
        recover_file: str | None = None,
        dest_path: str | None = None,
        loglevel: int | None = None,
        setup: Any = None,
        cleanup: Any = True,
        pulse_interval: float | None = None,
        ping_interval: float | None = None,
        reentrant: bool = False,
        secret: str | bytes = "",
        keyfile: str | None = None,
        certfile: str | None = None,
        *,
        host: Any = None,
        ext_host: Any = None,
        dispy_port: int | None = None,
        job_status: Any = None,
        poll_interval: float | None = None,
        ipv4_udp_multicast: bool = False,
        _resume: dict | None = None,
    ) -> None:
        if loglevel is not None:  # else keep what the program set (dispy.logger.setLevel)
            logger.setLevel(loglevel)
        ip_addr = ip_addr if ip_addr is not None else host
        ext_ip_addr = ext_ip_addr if ext_ip_addr is not None else ext_host
        callback = callback if callback is not None else job_status
        if dispy_port:
            port = port or dispy_port
            node_port = node_port or dispy_port + 1
        port = config.ClientPort if port is None else int(port)
        node_port = config.NodePort if node_port is None else int(node_port)
        if reentrant not in (True, False):
            raise ValueError("reentrant must be True or False")
        for value, what, low, high in ((pulse_interval, "pulse_interval", 1, 600),
                                       (ping_interval, "ping_interval", 1, 1000)):
            if value is not None and not (low <= value <= high):
                raise ValueError(f"{what} must be between {low} and {high} seconds")
        if dest_path is not None:
            dest_path = str(dest_path).lstrip("/")
        if isinstance(ip_addr, str):
            ip_addr = [ip_addr]
        if isinstance(ext_ip_addr, str):
            ext_ip_addr = [ext_ip_addr]
        _check_callable(callback, "callback")
        _check_callable(cluster_status, "cluster_status")
        if cleanup not in (True, False):
            _check_callable(cleanup, "cleanup")
        if isinstance(setup, functools.partial):
            setup = _bind_partial(setup)
        if isinstance(cleanup, functools.partial):
            cleanup = _bind_partial(cleanup)
        for f in (keyfile, certfile):
            if f and not os.path.isfile(f):
                raise ValueError(f"TLS file {f} does not exist")
        #: the port of nodes given without one (here, and to allocate_node later)
        self._node_port = node_port
        allocs = to_allocations(nodes, node_port)
        if _resume is not None:  # recover_jobs runs jobs a crashed program had queued
            package, self._name = _resume["package"], _resume["name"]
        else:
            package = shipping.package(
                computation, list(depends or []), setup, cleanup if callable(cleanup) else None
            )
            self._name = _name_of(computation)
        self._lock = threading.Condition()
        self._pending = 0
        self._submitted = 0
        self._closed = False
        self._start_time = time.time()
        self._recover_file = recover_file
        if not secret:
            log.warning(self._NO_SECRET, self._name)
        self._engine = Engine.get(port, ip_addr)
        #: bound once: each submit posts it (loopthread.py)
        self._submit: Any = self._engine.submit
        if ipv4_udp_multicast:  # the program's engine asks by multicast from now on
            self._engine.finder.multicast = True
        if ext_ip_addr:  # behind NAT: nodes that know our secret announce there
            self._engine.finder.ext_ip_addr = str(ext_ip_addr[0])
        self._state = _ClusterState(
            self, cid=f"{os.getpid():x}.{next(_cids)}", name=self._name, allocs=allocs,
            package=package, profile=Profile(secret or "", certfile, keyfile),
            callback=callback, cluster_status=cluster_status, reentrant=reentrant,
            pulse_interval=pulse_interval, ping_interval=ping_interval,
            dest_path=dest_path, cleanup=cleanup, ext_ip_addr=ext_ip_addr,
            recover_file=recover_file,
        )
        self._start()

    def _start(self) -> None:
        """Hand the cluster to the engine, which finds and sets up its nodes."""
        self._engine.call(_call_async(self._engine.add_cluster, self._state)).result()

    def _queue(self, job: DispyJob) -> None:
        self._engine.post(self._submit, job)

    # ---- jobs -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    def _make_job(self, args: tuple, kwargs: dict) -> DispyJob | None:
        if self._closed:
            log.error("cluster %r is closed; job not submitted", self._name)
            return None
        depends = kwargs.pop("dispy_job_depends", None)
        if self._state.package.program is not None:
            args = tuple(str(a) for a in args)
        try:
            opts = joboptions.pop(kwargs)
            data, big = shipping.pack_job_args(args, kwargs)
            deps = shipping.job_dependencies(depends) if depends else None
        except ValueError as exc:
            log.error("cluster %r: job not submitted: %s", self._name, exc)
            return None
        job = DispyJob(self._state, data, self._engine.new_uid(), time.time())
        job._oob = big
        job._deps = deps
        job._opts = opts
        if big:
            job._tx += sum(memoryview(b).nbytes for b in big)
        with self._lock:
            self._pending += 1
            self._submitted += 1
        return job

    def _submit_packed(self, data: bytes, job_id: Any) -> DispyJob:
        """Queue a job whose arguments are already packed (recover_jobs)."""
        job = DispyJob(self._state, data, self._engine.new_uid(), time.time())
        job.id = job_id
        with self._lock:
            self._pending += 1
            self._submitted += 1
        self._queue(job)
        return job

    def submit(self, *args: Any, **kwargs: Any) -> DispyJob | None:
        """Queue a job; returns it, or None (with a logged reason) if it can't be queued."""
        job = self._make_job(args, kwargs)
        if job is not None:
            self._queue(job)
        return job

    def submit_job_id(self, job_id: Any, *args: Any, **kwargs: Any) -> DispyJob | None:
        job = self._make_job(args, kwargs)
        if job is not None:
            job.id = job_id
            self._queue(job)
        return job

    def submit_node(self, node: Any, *args: Any, **kwargs: Any) -> DispyJob | None:
        """Queue a job that may run only on ``node`` (DispyNode, IP or host name). A node
        the cluster is still connecting to or setting up is waited for (at most
        ``config.NodeSetupWait`` seconds)."""
        link = self._node_link(node)
        if link is None or not self._engine.setups.pinnable(link.key, self._state.cid):
            log.error("cluster %r: node %s is not set up for this cluster; job not submitted",
                      self._name, node)
            return None
        key = link.key
        job = self._make_job(args, kwargs)
        if job is not None:
            job._pin = key
            self._queue(job)
        return job

    def submit_job_id_node(self, job_id: Any, node: Any, *args: Any, **kw: Any):
        job = self.submit_node(node, *args, **kw)
        if job is not None:
            job.id = job_id
        return job

    def _node_link(self, node: Any, what: str = "") -> Any:
        """The engine's connection to ``node`` (DispyNode, IP or host name), or None.

        A node of this cluster that is still being connected or set up (e.g. listed in
        ``nodes`` and asked for right after ``JobCluster()``) is waited for, at most
        ``config.NodeSetupWait`` seconds."""
        ip, port = node_address(node)
        link = None
        if ip:
            deadline = time.monotonic() + config.NodeSetupWait
            while True:
                link, pending = self._on_loop(self._engine.control.node_readiness, self._state, ip,
                                              port)
                if link is not None or not pending or time.monotonic() >= deadline:
                    break
                time.sleep(0.05)
        if link is None and what:
            log.error("cluster %r: %s(%r): not a node of this cluster", self._name, what, node)
        return link

    def _on_loop(self, fn: Any, *args: Any) -> Any:
        return self._engine.call(_call_async(fn, *args)).result()

    def _allocations(self, node: Any) -> list | None:
        """``allocate_node``'s argument as NodeAllocates (None, logged, if invalid)."""
        try:
            return to_allocations(node, self._node_port)
        except ValueError as exc:
            log.error("cluster %r: allocate_node: %s", self._name, exc)
            return None

    def allocate_node(self, node: Any) -> int:
        """Use ``node`` (host, IP, NodeAllocate or a list of them) too: 0, or -1 if invalid."""
        allocs = self._allocations(node)
        if allocs is None:
            return -1
        return self._on_loop(self._engine.control.allocate_node, self._state, allocs)

    def deallocate_node(self, node: Any) -> int:
        """Schedule no more jobs on ``node`` (it stays set up): 0, or -1."""
        link = self._node_link(node, "deallocate_node")
        return -1 if link is None else self._on_loop(self._engine.control.deallocate_node,
                                                     self._state, link)

    def close_node(self, node: Any, terminate_pending: bool = False) -> int:
        """Release ``node`` for this cluster (its cleanup runs there): 0, or -1.

        Its running jobs finish first, or are cancelled with ``terminate_pending``.
        """
        link = self._node_link(node, "close_node")
        if link is None:
            return -1
        return self._on_loop(self._engine.control.close_node, self._state, link, terminate_pending)

    def resetup_node(self, node: Any, terminate_pending: bool = False) -> int:
        """Close the computation on ``node`` and run setup again (e.g. to swap in-memory
        data): its NodeAllocate's ``allocate`` is called again, then setup runs with the
        current ``setup_args`` and ``depends``. Jobs submitted from now on run after the new
        setup; those already running there finish first (or are cancelled with
        ``terminate_pending``). Returns 0, or -1 for a node that is not set up."""
        link = self._node_link(node, "resetup_node")
        if link is None:
            return -1
        return self._on_loop(self._engine.control.close_node, self._state, link, terminate_pending,
                             True)

    def node_jobs(self, node: Any, from_node: bool = False) -> list[DispyJob] | int:
        """Jobs of this cluster running on ``node``, or -1 for an unknown node."""
        link = self._node_link(node, "node_jobs")
        return -1 if link is None else self._on_loop(self._engine.control.node_jobs,
                                                     self._state, link)

    def set_node_cpus(self, node: Any, cpus: int) -> int:
        """Use ``cpus`` CPUs of ``node`` (negative: all but that many): the number, or -1."""
        link = self._node_link(node, "set_node_cpus")
        if link is None:
            return -1
        return self._on_loop(self._engine.control.set_node_cpus, self._state, link, int(cpus))

    def send_file(self, path: str, node: Any) -> int:
        """Copy a file into the computation's directory on ``node``: 0, or -1 (logged)."""
        if not os.path.isfile(path):
            log.error("cluster %r: send_file: %s is not a file", self._name, path)
            return -1
        link = self._node_link(node, "send_file")
        if link is None:
            return -1
        return self._engine.call(self._engine.control.send_file(self._state, link, path)).result()

    def cancel(self, job: DispyJob) -> int:
        """Cancel a job: 0 if it was queued or running, -1 if it had already ended."""
        return self._engine.call(_call_async(self._engine.cancel, job)).result()

    def _job_finished(self) -> None:
        with self._lock:
            self._pending -= 1
            if self._pending == 0:
                self._lock.notify_all()

    def wait(self, timeout: float | None = None, progress: bool = False) -> bool:
        """Wait until every submitted job ended; False if ``timeout`` passed first.
        ``progress=True`` shows a tqdm bar meanwhile (done/failed, jobs/s, ETA)."""
        if progress:
            from .progress import wait_cluster

            done = wait_cluster(self, timeout)
        else:
            with self._lock:
                done = self._lock.wait_for(lambda: self._pending == 0, timeout)
        if done and self._engine.local.callbacks.drain(timeout):
            self._engine.settle()  # what the callbacks released is forgotten too
        return done

    def __call__(self) -> None:
        self.wait()

    def map(self, *iterables: Any, timeout: float | None = None, chunksize: int = 1) -> Any:
        """Run a job per item (items of several iterables are zipped into the arguments)
        and yield the results in order, as ``Executor.map``; a job that did not finish
        raises ``dispy.JobError``, ``TimeoutError`` after ``timeout`` seconds."""
        from .futures import cluster_map

        return cluster_map(self, iterables, timeout, chunksize)

    # ---- nodes and status -------------------------------------------------------

    def wait_nodes(self, n: int = 1, timeout: float | None = None) -> int:
        """Wait until at least ``n`` nodes are set up for this cluster (or ``timeout``
        seconds passed); returns the number of nodes set up. (Not in the original, whose
        programs slept a few seconds or counted ``DispyNode.Initialized`` callbacks.)"""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"wait_nodes: n must be an int >= 1, not {n!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ready = len(self.status().nodes)
            if ready >= n or self._closed or (deadline is not None
                                              and time.monotonic() >= deadline):
                return ready
            time.sleep(0.05)

    def discover_nodes(self, nodes: Any) -> int:
        allocs = to_allocations(nodes, self._node_port)

        async def add() -> None:
            known = {(a.host, a.port) for a in self._state.allocs}
            # the same node asked for again (e.g. in a loop) is looked for, not added again
            self._state.allocs.extend(a for a in allocs if (a.host, a.port) not in known
                                      or type(a) is not NodeAllocate)
            self._engine.finder.ask(self._state, allocs)

        self._engine.call(add()).result()
        return 0

    def status(self) -> ClusterStatus:
        async def get() -> ClusterStatus:
            return ClusterStatus(list(self._state.nodes.values()),
                                 self._engine.core.queued(self._state.cid))

        return self._engine.call(get()).result()

    def _chain_status(self, fn: Any) -> Any:
        """Put ``fn(status, node, job)`` in front of the program's ``cluster_status``
        (dispy.httpd watches the cluster this way); returns the program's callback, which
        ``fn`` calls on. ``fn=None`` puts the given callback back (``_chain_status(prev)``
        with the returned value restores it)."""
        previous = self._state.cluster_status
        self._state.cluster_status = fn
        return previous

    @property
    def start_time(self) -> float:
        """When the cluster was created (time.time())."""
        return self._start_time

    @property
    def jobs_submitted(self) -> int:
        """Jobs submitted so far (read-only counter for monitors)."""
        return self._submitted

    @property
    def jobs_pending(self) -> int:
        """Jobs submitted that have not ended yet."""
        return self._pending

    def print_status(self, wall_time: float | None = None) -> None:
        """Print per-node jobs, CPU time and traffic of this cluster, and its speedup.

        CPUs are those this cluster may use on each node (its share, not the node's
        total); jobs, time and bytes count this cluster's jobs only."""

        async def rows() -> tuple[list[NodeStats], int]:
            state = self._state
            for key, node in state.nodes.items():
                row = state.stats.setdefault(key, NodeStats(node.ip_addr, node.name))
                row.cpus = state.node_cpus.get(key, node.cpus)
            return list(state.stats.values()), 0

        table, _ = self._engine.call(rows()).result()
        pending = self.status().jobs_pending
        if wall_time is None:
            wall_time = time.time() - self._start_time
        print(format_status(table, pending, wall_time))

    def stats(self, wall_time: float | None = None, quiet: bool = False) -> ClusterStats:
        """This cluster's figures as a typed record (``dispy.ClusterStats``). As in 4.15
        (where ``stats`` was ``print_status``) it also prints the table, unless
        ``quiet``."""
        if not quiet:
            self.print_status(wall_time)

        async def get() -> ClusterStats:
            return cluster_stats(self._state, self._submitted, self._pending)

        return self._engine.call(get()).result()

    # ---- closing ----------------------------------------------------------------

    def close(self, timeout: float | None = None, terminate: bool = False) -> bool:
        """Wait for the jobs (up to ``timeout``), then release the nodes: True once
        closed (also when it already was), False on timeout."""
        if self._closed:
            return True
        done = self.wait(timeout)
        if not done and not terminate:
            return False
        self._closed = True
        self._engine.call(self._close_on_loop(terminate)).result()
        self._engine.local.callbacks.drain(timeout)
        return True

    def _detach(self) -> None:
        """Leave the jobs running on their nodes, in the recover file (recover_jobs)."""
        self._closed = True
        self._engine.call(self._engine.control.detach_cluster(self._state)).result()

    def _close_on_loop(self, terminate: bool) -> Any:
        return self._engine.control.close_cluster(self._state, terminate)

    def shutdown(self) -> None:
        self.close()

    def __enter__(self) -> JobCluster:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if exc_type is None:
            self.close()
        else:
            self.close(timeout=0, terminate=True)
        return False


async def _call_async(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _bind_partial(part: functools.partial) -> Any:
    func, args, kw = part.func, part.args, part.keywords

    def bound(*more: Any) -> Any:
        return func(*args, *more, **kw)

    bound.__name__ = getattr(func, "__name__", "setup")
    return bound


def _name_of(computation: Any) -> str:
    if isinstance(computation, str):
        return os.path.basename(computation)
    if isinstance(computation, types.MethodType):
        return computation.__func__.__name__
    return getattr(computation, "__name__", type(computation).__name__)
