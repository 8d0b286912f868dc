"""Typed records of a node's own protocol: its daemon, computation hosts, job processes.

The daemon never trusts what a computation host or a job process says (both run the
client's code): each frame is decoded once into its record where the daemon reads it,
and one that does not fit is logged and dropped, so a job cannot crash the daemon with
a stray frame. Four directions, each with its parser, since some ops repeat across
them ("cancel", "close", "done"):

* daemon -> host (``parse_host_request``): init, fork, cancel, kill, settle, reap, close;
* host -> daemon (``parse_host_message``): ready, setup_failed, shutdown_request,
  fork_failed, forked, settled, reaped, closed (and host_lost, said by the daemon's own
  reader when the host's socket closes);
* a job link -> daemon (``parse_job_message``): hello (the host's first frame on each
  job process's link), then done (or done_file), provisional and send_file from the
  job process;
* daemon -> job process (``parse_job_request``): job, file_reply.

Required fields have no default (the records are keyword-only), so a missing one is
refused by ``Record.parse``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .messages import Done, Provisional
from .records import ID, Id, MessageError, Record, parse_op

__all__ = [
    "CancelJob", "CloseHost", "DoneInFile", "FileReply", "Fork", "ForkFailed", "Forked", "Hello",
    "HostClosed", "HostInit", "HostLost", "JobSendFile", "KillJob", "Provisional",
    "Ready", "Reap", "Reaped", "RunJob", "Settle", "Settled", "SetupFailed",
    "ShutdownRequest", "SkipJob", "Skipped", "parse_host_message", "parse_host_request",
    "parse_job_message", "parse_job_request",
]

# ---- daemon -> computation host ----------------------------------------------------


@dataclass(kw_only=True, repr=False, eq=False)
class HostInit(Record):
    """The computation to hold; buffers: its bundle, then setup's arguments."""
    op: ClassVar[str] = "init"
    cid: Id
    dir: str
    #: the daemon's socket for job processes, and the token they show there
    jobs_path: str
    token: Id
    node_name: str
    node_ip_addr: str
    client_shutdown: bool = False
    #: job processes to fork as soon as setup is done (after ``Ready``), without
    #: waiting for a ``Fork``: the first job waits for the first of them
    fork: int = 0
    #: the node's directory where job processes write big results (``DoneInFile``),
    #: and the tag their files' names carry
    result_dir: str | None = None
    result_tag: Id | None = None


@dataclass(kw_only=True, repr=False, eq=False)
class Fork(Record):
    """Fork ``count`` more job processes."""
    op: ClassVar[str] = "fork"
    count: int = 1


@dataclass(kw_only=True, repr=False, eq=False)
class CancelJob(Record):
    """Interrupt the job ``uid`` in job process ``pid``, escalating to SIGKILL."""
    op: ClassVar[str] = "cancel"
    pid: int
    uid: Id


@dataclass(kw_only=True, repr=False, eq=False)
class SkipJob(Record):
    """Job ``uid``, the ``seq``-th sent to job process ``pid``, is cancelled: unless the
    process has reached it, it is to end Cancelled there without starting (no signal:
    another job is running). The host answers ``Skipped``."""
    op: ClassVar[str] = "skip"
    pid: int
    uid: Id
    seq: int


@dataclass(kw_only=True, repr=False, eq=False)
class KillJob(Record):
    """Kill job process ``pid`` at once (the service window ended)."""
    op: ClassVar[str] = "kill"
    pid: int


@dataclass(kw_only=True, repr=False, eq=False)
class Settle(Record):
    """Job process ``pid``'s cancelled job ended: stop escalating, it takes jobs again."""
    op: ClassVar[str] = "settle"
    pid: int


@dataclass(kw_only=True, repr=False, eq=False)
class Reap(Record):
    """Job process ``pid``'s link closed: wait for it and say how it ended."""
    op: ClassVar[str] = "reap"
    pid: int


@dataclass(kw_only=True, repr=False, eq=False)
class CloseHost(Record):
    """Kill the job processes, run cleanup, exit."""
    op: ClassVar[str] = "close"
    status: int | None = None
    reason: str | None = None


# ---- computation host -> daemon ----------------------------------------------------


@dataclass(kw_only=True, repr=False, eq=False)
class Ready(Record):
    """Setup ran: the host takes fork requests."""
    op: ClassVar[str] = "ready"
    pid: int


@dataclass(kw_only=True, repr=False, eq=False)
class SetupFailed(Record):
    op: ClassVar[str] = "setup_failed"
    reason: str = "setup failed"


@dataclass(kw_only=True, repr=False, eq=False)
class ShutdownRequest(Record):
    """dispynode_shutdown() in the computation's cleanup."""
    op: ClassVar[str] = "shutdown_request"


@dataclass(kw_only=True, repr=False, eq=False)
class ForkFailed(Record):
    op: ClassVar[str] = "fork_failed"
    reason: str


@dataclass(kw_only=True, repr=False, eq=False)
class Forked(Record):
    """The host forked ``pid``; its link to the daemon will say hello with ``link``.
    (The pid comes from the host's socket only, never from the job's link.)"""
    op: ClassVar[str] = "forked"
    pid: int
    link: Id


@dataclass(kw_only=True, repr=False, eq=False)
class Skipped(Record):
    """The answer to SkipJob: ``reached`` if the process had already taken the job (it
    runs or ran: it is to be cancelled as a running job), else it will skip it."""
    op: ClassVar[str] = "skipped"
    pid: int
    uid: Id
    reached: bool


@dataclass(kw_only=True, repr=False, eq=False)
class Settled(Record):
    op: ClassVar[str] = "settled"
    pid: int


@dataclass(kw_only=True, repr=False, eq=False)
class Reaped(Record):
    op: ClassVar[str] = "reaped"
    pid: int
    reason: str = "job process died"


@dataclass(kw_only=True, repr=False, eq=False)
class HostClosed(Record):
    """Cleanup ran; the host exits. ``problem``: how the computation's cleanup failed."""
    op: ClassVar[str] = "closed"
    problem: str | None = None


@dataclass(kw_only=True, repr=False, eq=False)
class HostLost(Record):
    """The host's socket closed without "closed" (the daemon's reader says so)."""
    op: ClassVar[str] = "host_lost"
    reason: str


# ---- a job link -> daemon ------------------------------------------------------------


@dataclass(kw_only=True, repr=False, eq=False)
class Hello(Record):
    """The first frame on a job process's link, sent by its host before the fork: the
    computation's token and the link id the host also told the daemon with its pid."""
    op: ClassVar[str] = "hello"
    token: str
    link: Id


@dataclass(kw_only=True, repr=False, eq=False)
class JobSendFile(Record):
    """A job's ``dispy_send_file``; buffers: the file's bytes. The daemon passes it on
    as ``messages.SendFile`` and answers with ``FileReply``."""
    op: ClassVar[str] = "send_file"
    uid: Id
    path: str
    size: int
    mtime: float | None = None
    mode: int = 0o644


@dataclass(kw_only=True, repr=False, eq=False)
class LaneStarted(Record):
    """The process takes job ``uid`` from its lane (the daemon counts it as any running
    job: CPUs, cancels, a process that dies with it, the jobs sent ahead behind it)."""
    op: ClassVar[str] = "lane_started"
    uid: Id


@dataclass(kw_only=True, repr=False, eq=False)
class LaneDone(Done):
    """A job the program sent on the process's lane ended; its result went there
    (``delivered``) or could not (the daemon sends it the usual way). Buffers as
    ``Done``'s. The daemon keeps it until the program acknowledges it, as any result."""
    op: ClassVar[str] = "lane_done"
    delivered: bool = True

    @classmethod
    def parse(cls, header: dict[str, Any]) -> LaneDone:
        done = Done.parse(header)  # as a "done" frame is checked
        return cls(uid=done.uid, cid=done.cid, status=done.status,
                   start_time=done.start_time, end_time=done.end_time,
                   exception=done.exception, oob=done.oob, text=done.text,
                   delivered=_delivered(header, cls.op))

    def header(self) -> dict[str, Any]:
        out = super().header()
        out.update(op=self.op, delivered=self.delivered)
        return out


@dataclass(kw_only=True, repr=False, eq=False)
class LaneEnded(Record):
    """The process's lane closed or broke: it may be given another."""
    op: ClassVar[str] = "lane_ended"
    reason: str = ""


# ---- daemon -> job process -------------------------------------------------------------


@dataclass(kw_only=True, repr=False, eq=False)
class LaneHandOver(Record):
    """The program's lane to this process: its socket comes with this frame (SCM_RIGHTS),
    sealed as the daemon's handshake left it: the keys (hex) and record numbers of the
    two directions. From now on the process reads jobs there too (node/lanes.py)."""
    op: ClassVar[str] = "lane"
    send_key: str
    recv_key: str
    send_seq: int
    recv_seq: int


@dataclass(kw_only=True, repr=False, eq=False)
class LaneClose(Record):
    """Close the lane (once the job running now, if any, is done): the node stops
    accepting jobs, or another computation shares it now."""
    op: ClassVar[str] = "lane_close"


@dataclass(kw_only=True, repr=False, eq=False)
class RunJob(Record):
    """Run this job; buffers: its arguments, its dispy_job_depends, out-of-band ones."""
    op: ClassVar[str] = "job"
    uid: Id
    oob: int = 0

    @classmethod
    def parse(cls, header: dict[str, Any]) -> RunJob:
        # one per job: checked by hand
        uid, oob = header.get("uid"), header.get("oob", 0) or 0
        if not isinstance(uid, str) or not ID.fullmatch(uid):
            raise MessageError("'job' without a valid 'uid'")
        if type(oob) is not int or oob < 0:
            raise MessageError("'job' with a malformed 'oob'")
        return cls(uid=uid, oob=oob)

    def header(self) -> dict[str, Any]:
        # one per job to a job process: written out (Record.header loops)
        return {"op": "job", "uid": self.uid, "oob": self.oob}


@dataclass(kw_only=True, repr=False, eq=False)
class FileReply(Record):
    """The daemon's answer to ``JobSendFile``."""
    op: ClassVar[str] = "file_reply"
    ok: bool
    reason: str | None = None


@dataclass(kw_only=True, repr=False, eq=False)
class DoneInFile(Done):
    """A job's end whose buffers (result, stdout, stderr, out-of-band ones: ``lens``
    bytes each) its job process wrote to ``file`` in the node's result directory
    instead of the link: a big result then goes into the node neither through the link
    nor into the result log (the daemon maps the file, logs its name and sends from it).
    ``file`` must be named ``<the process's pid>-<n>`` (the daemon checks)."""
    op: ClassVar[str] = "done_file"
    file: Id
    lens: list[int]

    @classmethod
    def parse(cls, header: dict[str, Any]) -> DoneInFile:
        done = Done.parse(header)  # as a "done" frame is checked
        name, lens = header.get("file"), header.get("lens")
        if not isinstance(name, str) or not ID.fullmatch(name):
            raise MessageError("'done_file' without a valid 'file'")
        if not isinstance(lens, list) or len(lens) != 3 + done.oob or any(
                type(n) is not int or n < 0 for n in lens):
            raise MessageError("'done_file' with malformed 'lens'")
        return cls(uid=done.uid, cid=done.cid, status=done.status,
                   start_time=done.start_time, end_time=done.end_time,
                   exception=done.exception, oob=done.oob, text=done.text, file=name,
                   lens=lens)

    def header(self) -> dict[str, Any]:
        out = super().header()
        out.update(op=self.op, file=self.file, lens=self.lens)
        return out


@dataclass(kw_only=True, repr=False, eq=False)
class LaneDoneInFile(DoneInFile):
    """A lane's job ended with a big result: its process wrote it to ``file`` (the
    daemon's copy, kept until the program acknowledges it, as ``DoneInFile``'s) and sent
    it on the lane (``delivered``) or could not (the daemon sends it from the file)."""
    op: ClassVar[str] = "lane_done_file"
    delivered: bool = True

    @classmethod
    def parse(cls, header: dict[str, Any]) -> LaneDoneInFile:
        done = DoneInFile.parse(header)
        return cls(uid=done.uid, cid=done.cid, status=done.status,
                   start_time=done.start_time, end_time=done.end_time,
                   exception=done.exception, oob=done.oob, text=done.text,
                   file=done.file, lens=done.lens, delivered=_delivered(header, cls.op))

    def header(self) -> dict[str, Any]:
        out = super().header()
        out.update(op=self.op, delivered=self.delivered)
        return out


def _delivered(header: dict[str, Any], op: str) -> bool:
    """A lane result's ``delivered`` flag (true when absent)."""
    delivered = header.get("delivered", True)
    if type(delivered) is not bool:
        raise MessageError(f"{op!r} with a malformed 'delivered'")
    return delivered


# ---- parsers ---------------------------------------------------------------------------

HOST_REQUESTS: dict[str, type[Record]] = {
    c.op: c for c in (HostInit, Fork, CancelJob, SkipJob, KillJob, Settle, Reap,
                      CloseHost)}
HOST_MESSAGES: dict[str, type[Record]] = {
    c.op: c for c in (Ready, SetupFailed, ShutdownRequest, ForkFailed, Forked, Skipped,
                      Settled, Reaped, HostClosed, HostLost)}
JOB_MESSAGES: dict[str, type[Record]] = {
    c.op: c for c in (Hello, Done, DoneInFile, LaneStarted, LaneDone, LaneDoneInFile,
                      LaneEnded, Provisional, JobSendFile)}
JOB_REQUESTS: dict[str, type[Record]] = {
    c.op: c for c in (RunJob, FileReply, LaneHandOver, LaneClose)}


def _parse(table: dict[str, type[Record]], header: dict[str, Any], what: str) -> Record:
    msg = parse_op(header, table, what)
    if isinstance(msg, Provisional) and not msg.uid:
        raise MessageError("'provisional' without 'uid'")
    for name in ("count", "size", "send_seq", "recv_seq"):
        if getattr(msg, name, 0) < 0:
            raise MessageError(f"{name!r} is negative")
    return msg


def parse_host_request(header: dict[str, Any]) -> Record:
    """A daemon's frame to its computation host."""
    return _parse(HOST_REQUESTS, header, "host request")


def parse_host_message(header: dict[str, Any]) -> Record:
    """A computation host's frame to the daemon; MessageError: drop it."""
    return _parse(HOST_MESSAGES, header, "host message")


def parse_job_message(header: dict[str, Any]) -> Record:
    """A frame on a job process's link to the daemon; MessageError: drop it."""
    if header.get("op") == "done":  # the fast path: one per job
        return Done.parse(header)
    return _parse(JOB_MESSAGES, header, "job message")


def parse_job_request(header: dict[str, Any]) -> Record:
    """A daemon's frame to a job process."""
    if header.get("op") == "job":  # the fast path: one per job
        return RunJob.parse(header)
    return _parse(JOB_REQUESTS, header, "job request")
