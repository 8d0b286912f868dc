"""Where a JobCluster's jobs end: in the program that submitted them.

The engine (engine.py) manages nodes and carries out the scheduling core's decisions;
what a job's end *means* is the sink's business. Here, in a user's program, a result is
unpickled into its ``DispyJob``, callbacks run on the callback thread, the recover file
forgets the job, and files a node sends are saved in the working directory.
dispyscheduler has its own sink (scheduler/programs.py) that passes everything on to the
program that submitted the job, unopened.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..daemon.files import safe_join
from ..log import detail, last_line
from ..wire.codec import nbytes
from ..wire.messages import Done, JobResult, SendFile
from .callbacks import CallbackRunner
from .clusterstate import ClusterState
from .job import STATUS_NAMES, DispyJob, decode_result
from .journal import Journal, default_path
from .sink import allocated_cpus
from .status import NodeStats

if TYPE_CHECKING:
    from .links import NodeLink

log = logging.getLogger("dispy")


class LocalSink:
    """Ends jobs in this program: DispyJob, callbacks, recover files."""

    def __init__(self, session_key: str) -> None:
        self.session_key = session_key
        #: recover files by path; several clusters may share one
        self.journals: dict[str, Journal] = {}
        #: this program's default recover file, shared by its clusters while one is open
        self.default_journal: str | None = None
        self.callbacks = CallbackRunner()

    # ---- recover files ----------------------------------------------------------

    def journal_for(self, cs: ClusterState) -> Any:
        """The recover file that keeps ``cs``'s jobs (ValueError when it is in use)."""
        path = os.path.abspath(cs.recover_file) if cs.recover_file else self.default_journal
        journal: Journal | None = self.journals.get(path) if path else None
        if journal is None:
            journal = Journal(os.path.abspath(cs.recover_file) if cs.recover_file
                              else default_path())
            self.journals[journal.path] = journal
            if not cs.recover_file:
                self.default_journal = journal.path
        journal.add_cluster(cs, self.session_key)
        return journal

    def flush_journals(self) -> None:
        for journal in self.journals.values():
            try:
                journal.flush()
            except Exception as exc:  # a full disk must not stop the cluster
                log.warning("recover file %s not updated: %s", journal.path, exc)

    def forget_journal(self, journal: Any) -> None:
        """``journal`` keeps no cluster any more."""
        path = journal.path
        if self.journals.get(path) is journal:
            del self.journals[path]

    def close_journals(self) -> list[tuple[str, int]]:
        """(at exit) Remove recover files with nothing left to recover; the others as
        (path, jobs left)."""
        kept = []
        for path, journal in list(self.journals.items()):
            try:
                left = journal.close_at_exit()
            except Exception as exc:
                log.debug("recover file %s: %s", path, exc)
                continue
            if left:
                kept.append((path, left))
        self.journals.clear()
        return kept

    # ---- allocation ----------------------------------------------------------------

    def allocates_later(self, link: NodeLink, cs: ClusterState, alloc: Any) -> bool:
        return False  # allocate() runs here, at once

    def allocate(self, cs: ClusterState, link: NodeLink, alloc: Any) -> int:
        return allocated_cpus(cs, link, alloc)

    def setup_payload(self, cs: ClusterState, link: NodeLink, alloc: Any) -> tuple[list, bytes]:
        """The files and pickled setup_args ``alloc`` has now: an ``allocate`` that sets
        them per node may be called for another node next."""
        files = list(cs.package.files) + cs.node_files(alloc)
        return files, cloudpickle.dumps(alloc.setup_args)

    # ---- a job's end ------------------------------------------------------------------

    def deliver(self, job: DispyJob, done: Done | JobResult, bufs: list[bytes]) -> None:
        """A job's result arrived from the node that ran it (or through dispyscheduler)."""
        status, result, out, err, exc = decode_result(done, bufs)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("job %s of %r: %s from %s", job.id, job._cluster.name,
                      STATUS_NAMES.get(status, status), job.ip_addr)
        job.start_time = done.start_time or job.start_time
        self._count(job, (done.end_time or 0.0) - (done.start_time or 0.0), bufs)
        self._end(job, status, result, out, err, exc, done.end_time)

    def finish(self, job: DispyJob, status: int, reason: str) -> None:
        """The engine's own verdict on a job (cancelled, node lost, abandoned)."""
        self._end(job, status, None, None, None, reason)

    def _end(self, job: DispyJob, status: int, result: Any, stdout: Any, stderr: Any,
             exception: str | None, end_time: float | None = None) -> None:
        if job._final:
            return
        job.result, job.stdout, job.stderr, job.exception = result, stdout, stderr, exception
        job.status = status
        job.end_time = end_time or time.time()
        job._final = True
        job._args = job._oob = None
        cs = job._cluster
        cs.jobs.pop(job._uid, None)
        if cs.callback is None:
            cs.journal.finished(job._uid)
        job._set_finished()  # else forgotten once the callback ran (Engine.settled)
        self.job_event(job)
        cs.job_finished()

    def _count(self, job: DispyJob, ran: float, bufs: list[bytes]) -> None:
        """Add a finished job to its cluster's statistics of its node (print_status)."""
        cs, key = job._cluster, job._key
        if key is None or not hasattr(cs, "stats"):
            return
        row = cs.stats.get(key)
        if row is None:
            node = cs.nodes.get(key)
            row = cs.stats[key] = NodeStats(job.ip_addr or str(key[0]),
                                            node.name if node is not None else "")
        row.count(max(0.0, ran), job._tx + 64, sum(map(nbytes, bufs)) + 64)

    def provisional(self, job: DispyJob | None, bufs: list[bytes]) -> None:
        """A running job sent ``dispy_provisional_result``: tell the callbacks."""
        if job is None or job._final:
            return
        try:
            job.result = cloudpickle.loads(bufs[0])
        except Exception as exc:
            log.warning("provisional result of job %s could not be unpickled: %s", job.id, exc)
            return
        job.status = DispyJob.ProvisionalResult
        self.job_event(job)

    # ---- events for the program -------------------------------------------------------

    def job_event(self, job: DispyJob) -> None:
        """A job's status changed: ``cluster_status`` hears of every change, the job
        callback (``job_status``) only of results, provisional or final, as in dispy
        4.15 (its callbacks need not skip Created and Running, and a job costs the
        program two callbacks fewer)."""
        cs = job._cluster
        callback = cs.callback if job._final or job.status == DispyJob.ProvisionalResult \
            else None
        if callback is None and cs.cluster_status is None:
            return
        snap = copy.copy(job)
        if callback is not None:
            self.callbacks.call(callback, snap, settle=job if job._final else None)
        if cs.cluster_status is not None:
            node = cs.nodes.get(job._key) if job._key is not None else None
            self.callbacks.call(cs.cluster_status, job.status, node, snap)

    def status(self, cs: ClusterState, status: int, node: Any, job: Any) -> None:
        if cs.cluster_status is not None:
            self.callbacks.call(cs.cluster_status, status, node, job)

    def reports_stall(self, cs: ClusterState) -> bool:
        return True  # the user wants to know why nothing runs

    def cleanup_failed(self, cs: Any, source: str, problem: str) -> None:
        log.warning("%s: cleanup of %r failed: %s", source, getattr(cs, "name", "?"),
                    last_line(problem), extra=detail(problem))

    def file_from_node(self, source: str, msg: SendFile, bufs: list[bytes]) -> None:
        """A job's ``dispy_send_file``: saved under the working directory, never above."""
        try:
            path = safe_join(os.getcwd(), msg.path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                for buf in bufs:
                    fh.write(buf)
            os.chmod(path, msg.mode & 0o7777)
            if msg.mtime is not None:
                os.utime(path, (msg.mtime, msg.mtime))
        except (OSError, ValueError) as exc:
            log.warning("file %r from %s not saved: %s", msg.path, source, exc)
