"""dispy.Executor: a ``concurrent.futures.Executor`` whose workers are dispy nodes.

One JobCluster runs a small dispatcher, ``_dispatch(key, blob, mode, args, kwargs)``.
Each function given to ``submit``/``map`` is pickled once (cloudpickle, by value when it
comes from the program's own modules) and named by the hash of its pickle. The pickle
goes to each node once, as a file in the computation's directory (``send_file`` when the
function is first used and when a node joins later), and every job carries only the key.
A job process loads the function from that file on first use and keeps it in memory.
A job that reaches a node before the file does answers "missing"; it is sent again with
the pickle inline, which the node stores for the jobs after it. So a function is never
pickled per call, and sent to a node about once.

Exceptions raised by the function are re-raised by ``future.result()`` as themselves,
with the remote traceback as their ``__cause__``; a job that ends other than by
returning or raising (its node was lost, it was cancelled while running, its process
died) raises ``dispy.JobError``.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import itertools
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import config
from ..log import logger
from .futures import JobError, _on_loop
from .job import DispyJob
from .nodes import DispyNode, to_allocations

_FN_FILE = "_dispy_fn_{}.pkl"
_MISSING = "dispy.Executor: function missing"

# ---- on the node -----------------------------------------------------------------------

_loaded: dict[str, Any] = {}


def _dispatch(key: str, blob: bytes | None, mode: str, args: Any, kwargs: dict) -> tuple:
    """(node) Run function ``key`` on ``args`` (mode "call") or on each argument tuple of
    the chunk ``args`` (mode "chunk"): ("ok", value) or ("err", exception, traceback)."""
    import os
    import pickle

    import cloudpickle

    fn = _loaded.get(key)
    if fn is None:
        path = os.path.join(os.getcwd(), _FN_FILE.format(key))
        if blob is None:
            try:
                with open(path, "rb") as fh:
                    blob = fh.read()
            except FileNotFoundError:
                return (_MISSING, key)
        elif not os.path.exists(path):  # for the next job processes of this node
            tmp = f"{path}.{os.getpid()}"
            with open(tmp, "wb") as fh:
                fh.write(blob)
            os.replace(tmp, path)
        fn = _loaded[key] = cloudpickle.loads(blob)
    try:
        if mode == "chunk":
            return ("ok", [fn(*item) for item in args])
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:
        text = traceback.format_exc()
        try:
            cloudpickle.dumps(exc)
        except (pickle.PicklingError, TypeError, AttributeError):
            exc = RuntimeError(f"{type(exc).__name__}: {exc} (exception not picklable)")
        return ("err", exc, text)


# ---- in the program --------------------------------------------------------------------


class RemoteTraceback(Exception):
    """The traceback of an exception raised on a node (the ``__cause__`` of it here)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class _Task(cf.Future):
    """The future of one ``submit`` (or one chunk of ``map``)."""

    def __init__(self, executor: Executor, key: str, mode: str, args: Any,
                 kwargs: dict) -> None:
        super().__init__()
        self._executor = executor
        self._call = (key, mode, args, kwargs)
        self._job: DispyJob | None = None
        self._cancel_requested = False

    def running(self) -> bool:
        job = self._job
        return not self.done() and job is not None and job.status in (
            DispyJob.Running, DispyJob.ProvisionalResult)

    def cancel(self) -> bool:
        """Cancel the call if it is still queued (True); a running one goes on (False)."""
        if self.cancelled():
            return True
        job = self._job
        if self.done() or job is None or job.status != DispyJob.Created:
            return False
        cluster = self._executor._cluster
        if _on_loop(cluster):
            return False
        self._cancel_requested = True
        cluster.cancel(job)
        return self.cancelled()


class Executor(cf.Executor):
    """``concurrent.futures.Executor`` running any function on dispy nodes.

    ``nodes``, ``secret`` and any other keyword are JobCluster's; ``cpus`` caps the CPUs
    used on each node; ``depends`` ships modules, files and classes the functions need.
    """

    def __init__(self, nodes: Any = None, secret: str = "", cpus: int | None = None,
                 depends: list | None = None, **cluster_options: Any) -> None:
        from .cluster import JobCluster

        if cpus is not None and (not isinstance(cpus, int) or cpus < 1):
            raise ValueError("cpus must be a positive integer")
        for name in ("computation", "callback", "job_status"):
            if name in cluster_options:
                raise TypeError(f"Executor does not take {name!r}: futures replace it")
        node_port = cluster_options.get("node_port")
        if node_port is None and cluster_options.get("dispy_port"):
            node_port = cluster_options["dispy_port"] + 1
        allocs = to_allocations(nodes, int(node_port or config.NodePort))
        if cpus is not None:
            for alloc in allocs:
                alloc.cpus = min(alloc.cpus, cpus) if alloc.cpus > 0 else cpus
        self._user_status = cluster_options.pop("cluster_status", None)
        self._lock = threading.Lock()
        self._shutdown = False
        self._tasks: set[_Task] = set()
        #: id(fn) -> (fn, key): the function is kept so its id is not reused
        self._keys: dict[int, tuple[Callable, str]] = {}
        self._blobs: dict[str, bytes] = {}
        self._dir = tempfile.mkdtemp(prefix="dispy-executor-")
        self._cluster = JobCluster(_dispatch, nodes=allocs, secret=secret, depends=depends,
                                   cluster_status=self._node_event, **cluster_options)
        self._closer: threading.Thread | None = None

    # ---- functions -------------------------------------------------------------------

    def _key_of(self, fn: Callable) -> str:
        """Pickle ``fn`` on its first use (once) and send it to the nodes known now."""
        from . import shipping

        with self._lock:
            known = self._keys.get(id(fn))
            if known is not None and known[0] is fn:
                return known[1]
        import cloudpickle

        shipping.ship_by_value(fn)
        blob = cloudpickle.dumps(fn)
        key = hashlib.sha256(blob).hexdigest()[:32]
        path = os.path.join(self._dir, _FN_FILE.format(key))
        with self._lock:
            new = key not in self._blobs
            self._keys[id(fn)] = (fn, key)
            self._blobs[key] = blob
        if new:
            with open(path, "wb") as fh:
                fh.write(blob)
            if _on_loop(self._cluster):  # from a done callback: nodes get it inline
                return key
            for node in self._cluster.status().nodes:
                self._cluster.send_file(path, node)
        return key

    def _node_event(self, status: int, node: Any, job: Any) -> None:
        """(callback thread) A node joined: give it the functions used so far."""
        if status == DispyNode.Initialized and node is not None:
            with self._lock:
                keys = list(self._blobs)
            for key in keys:
                self._cluster.send_file(os.path.join(self._dir, _FN_FILE.format(key)), node)
        if self._user_status is not None:
            self._user_status(status, node, job)

    # ---- calls -----------------------------------------------------------------------

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        return self._start(_Task(self, self._key_of(fn), "call", args, kwargs))

    def _start(self, task: _Task, inline: bool = False) -> _Task:
        key, mode, args, kwargs = task._call
        job = self._cluster.submit(key, self._blobs[key] if inline else None, mode, args,
                                   kwargs)
        if job is None:
            task.set_exception(ValueError("the call could not be sent: its arguments could"
                                          " not be pickled (see the log)"))
            return task
        task._job = job
        with self._lock:
            self._tasks.add(task)
        job.future.add_done_callback(lambda _, task=task, job=job: self._ended(task, job))
        return task

    def _ended(self, task: _Task, job: DispyJob) -> None:
        """(engine thread) Resolve ``task`` from its job's final status."""
        result = job.result
        if job.status == DispyJob.Finished and isinstance(result, tuple) and result:
            if result[0] == _MISSING:
                self._start(task, inline=True)  # the node has no copy of the function yet
                return
            with self._lock:
                self._tasks.discard(task)
            if result[0] == "ok":
                task.set_result(result[1])
                return
            if result[0] == "err":
                exc = result[1]
                exc.__cause__ = RemoteTraceback(result[2])
                task.set_exception(exc)
                return
        with self._lock:
            self._tasks.discard(task)
        if job.status == DispyJob.Cancelled and task._cancel_requested:
            cf.Future.cancel(task)
            task.set_running_or_notify_cancel()
        else:
            task.set_exception(JobError(job))

    def map(self, fn: Callable, *iterables: Iterable, timeout: float | None = None,
            chunksize: int = 1, progress: bool = False) -> Iterator[Any]:
        """Results of ``fn`` over the zipped ``iterables``, in order; ``chunksize`` items
        go in one job. Leaving the loop early cancels the queued calls. ``progress=True``
        shows a tqdm bar of the jobs (done/failed, jobs/s, ETA)."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        deadline = None if timeout is None else time.monotonic() + timeout
        items = zip(*iterables, strict=False)
        if chunksize == 1:
            tasks = [self.submit(fn, *args) for args in items]
        else:
            with self._lock:
                if self._shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown")
            key = self._key_of(fn)
            tasks = []
            while chunk := list(itertools.islice(items, chunksize)):
                tasks.append(self._start(_Task(self, key, "chunk", chunk, {})))
        bar = None
        if progress:
            from .progress import FutureProgress

            bar = FutureProgress(tasks)
        return _in_order(tasks, deadline, chunksize > 1, bar)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; ``cancel_futures`` cancels the queued ones. With ``wait`` return
        when every call ended and the nodes are released, else release them later."""
        with self._lock:
            self._shutdown = True
            tasks = list(self._tasks)
        if cancel_futures:
            for task in tasks:
                task.cancel()
        if self._closer is None:
            self._closer = threading.Thread(target=self._close, name="dispy-executor-close")
            self._closer.start()
        if wait:
            self._closer.join()

    def _close(self) -> None:
        try:
            self._cluster.close()
        except Exception:
            logger.exception("dispy.Executor: closing the cluster failed")
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def cluster(self) -> Any:
        """The JobCluster underneath (status, print_status, node control)."""
        return self._cluster


def _in_order(tasks: list[cf.Future], deadline: float | None, chunks: bool,
              bar: Any) -> Iterator[Any]:
    try:
        tasks.reverse()
        while tasks:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = tasks[-1].result(left)
            tasks.pop()
            if chunks:
                yield from value
            else:
                yield value
    finally:
        for task in tasks:
            task.cancel()
        if bar is not None:
            bar.close()
