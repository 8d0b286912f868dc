"""DispyJob: one call of the computation, its status and its results."""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any

from ..wire import oob, status

if TYPE_CHECKING:
    from ..wire.messages import Done, JobResult

_ids = itertools.count(1)
_event_lock = threading.Lock()


#: settle / future_of / wait_job, registered by client/futures.py (which imports this
#: module, so this one does not import it back)
FUTURE_HOOKS: dict[str, Any] = {}


class DispyJob:
    """A submitted job. ``id`` is the user's to set; everything else is read-only."""

    Created = status.CREATED
    Running = status.RUNNING
    ProvisionalResult = status.PROVISIONAL
    Cancelled = status.CANCELLED
    Terminated = status.TERMINATED
    Abandoned = status.ABANDONED
    Finished = status.FINISHED

    __slots__ = (
        "id", "result", "stdout", "stderr", "exception", "submit_time", "start_time",
        "end_time", "status", "ip_addr", "_event", "_ended", "_args", "_oob", "_cluster",
        "_uid",
        "_pin", "_final", "_deps", "_key", "_tx", "_future", "_opts", "_ack_to",
        "__weakref__",
    )

    def __init__(self, cluster: Any, args_buf: bytes | None, uid: str, submit_time: float) -> None:
        self.id: Any = next(_ids)
        self.result: Any = None
        self.stdout: Any = None
        self.stderr: Any = None
        self.exception: str | None = None
        self.submit_time = submit_time
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.status = DispyJob.Created
        self.ip_addr: str | None = None
        #: created only when someone waits: an Event (Condition, lock, deque) costs ~1 KB,
        #: most of a queued job's memory, and most jobs are never waited on one by one
        self._event: threading.Event | None = None
        self._ended = False
        self._args: bytes | None = args_buf
        #: big byte strings of the arguments, sent beside ``_args`` (see wire.oob)
        self._oob: list | None = None
        self._cluster = cluster
        self._uid = uid
        self._pin: Any = None
        self._final = False
        self._deps: Any = None
        #: the node (link key) the job was last sent to
        self._key: Any = None
        #: the link (NodeLink or SchedulerLink) that acknowledges its result, under its
        #: uid, once its callback ran
        self._ack_to: Any = None
        #: concurrent.futures.Future, created on first use of ``future`` (see futures.py)
        self._future: Any = None
        #: dispy_job_timeout / dispy_job_priority, if given (see joboptions.py)
        self._opts: dict | None = None
        #: bytes of its arguments, for print_status's "Sent"
        self._tx = len(args_buf) if args_buf else 0

    @property
    def finish(self) -> threading.Event:
        """Set when the job reached its final status (created on first use)."""
        event = self._event
        if event is None:
            with _event_lock:
                event = self._event
                if event is None:
                    event = self._event = threading.Event()
            # _set_finished may have run before the event existed: it set _ended first
            if self._ended:
                event.set()
        return event

    def _set_finished(self) -> None:
        """(engine) The job is final: wake whoever waits, now or later."""
        self._ended = True
        if self.status != DispyJob.Finished and hasattr(self._cluster, "failed"):
            self._cluster.failed += 1
        event = self._event
        if event is not None:
            event.set()
        if self._future is not None:
            FUTURE_HOOKS["settle"](self)

    @property
    def future(self) -> Any:
        """A ``concurrent.futures.Future`` of the job: its result when it ends Finished,
        else ``dispy.JobError`` (status and exception text); created on first use."""
        return FUTURE_HOOKS["future_of"](self)

    def __await__(self) -> Any:
        """``await job`` in asyncio code: the result, or raises ``dispy.JobError``."""
        import asyncio

        return asyncio.wrap_future(self.future).__await__()

    def __call__(self, clear: bool = False, timeout: float | None = None) -> Any:
        """Wait until the job ends (any final status) and return its result (None unless
        Finished); ``TimeoutError`` when ``timeout`` seconds pass first."""
        if not self._ended:
            if timeout is None:
                self.finish.wait()
            else:
                FUTURE_HOOKS["wait_job"](self, timeout)
        return self.result

    def __lt__(self, other: DispyJob) -> bool:
        return self.submit_time < other.submit_time

    def __repr__(self) -> str:
        return f"<DispyJob id={self.id!r} status={STATUS_NAMES.get(self.status, self.status)}>"

    def __copy__(self) -> DispyJob:
        """The snapshot a callback gets (three per job: keep it cheap)."""
        new = DispyJob.__new__(DispyJob)
        try:
            _copy_slots(new, self)
        except AttributeError:  # not made by __init__: copy what is set
            for slot in _SLOTS:
                if hasattr(self, slot):
                    setattr(new, slot, getattr(self, slot))
        return new


_SLOTS = tuple(s for s in DispyJob.__slots__ if s != "__weakref__")


def _slot_copier() -> Any:
    """``copy(new, old)`` assigning every slot as plain attribute stores (a loop of
    setattr calls cost a third of the client's time per job with a callback)."""
    body = "".join(f"    new.{slot} = old.{slot}\n" for slot in _SLOTS)
    scope: dict[str, Any] = {}
    exec(f"def copy(new, old):\n{body}", scope)  # noqa: S102 (names are our own slots)
    return scope["copy"]


_copy_slots = _slot_copier()


STATUS_NAMES = {
    DispyJob.Created: "Created", DispyJob.Running: "Running",
    DispyJob.ProvisionalResult: "ProvisionalResult", DispyJob.Cancelled: "Cancelled",
    DispyJob.Terminated: "Terminated", DispyJob.Abandoned: "Abandoned",
    DispyJob.Finished: "Finished",
}
def decode_result(done: Done | JobResult, bufs: list[bytes]) -> tuple:
    """A node's "done" frame as (status, result, stdout, stderr, exception)."""
    bufs, extra = oob.split(done.oob, bufs)
    out: Any = bufs[1] if len(bufs) > 2 else b""
    err: Any = bufs[2] if len(bufs) > 2 else b""
    if done.text is not False:
        out, err = out.decode(errors="replace"), err.decode(errors="replace")
    try:
        result = oob.loads(bufs[0], extra) if bufs else None
        status, exc = int(done.status), done.exception  # type: ignore[arg-type]
    except Exception as error:
        result, status = None, DispyJob.Terminated
        exc = f"result could not be unpickled at the client: {error!r}"
    return status, result, out, err, exc


FINAL = {DispyJob.Cancelled, DispyJob.Terminated, DispyJob.Abandoned, DispyJob.Finished}


def job_key(job: DispyJob) -> str:
    """A job's identity in the client while it is queued or running (its copies passed to
    callbacks share it); for monitors such as dispy.httpd."""
    return job._uid


def job_arguments(job: DispyJob) -> tuple[tuple, dict] | None:
    """The (args, kwargs) of a job while the client still holds them: until it is sent to
    a node (or always, for a reentrant cluster); None after. For dispy.httpd's
    ``show_job_args``: a callback gets the job at submission, when they are there."""
    data = job._args
    if data is None:
        return None
    try:
        args, kwargs = oob.loads(data, job._oob or ())
    except Exception:
        return None
    return tuple(args), dict(kwargs)
