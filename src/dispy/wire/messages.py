"""Typed records of the requests a daemon accepts, validated when decoded.

Every header a program sends to a node or to dispyscheduler is checked against the
record of its op before anything acts on it: required fields present, every field of
its type, ids of a fixed alphabet and length (they become directory names), sizes
within bounds. A frame that fails is refused with a reason and changes nothing, so a
missing ``uid`` can no longer wedge a node.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .records import ID, MAX_LIST, Id, MessageError, Record, check_float, nonneg, parse_op

# ---- requests a program sends to a node (and, most of them, to dispyscheduler) ------


@dataclass(repr=False, eq=False)
class Compute(Record):
    op: ClassVar[str] = "compute"
    cid: Id = ""
    name: str = "?"
    dest_path: str | None = None
    cleanup: bool = True
    pulse_interval: float | None = None
    kind: str = "function"


@dataclass(repr=False, eq=False)
class Setup(Record):
    op: ClassVar[str] = "setup"
    cid: Id = ""


@dataclass(repr=False, eq=False)
class Job(Record):
    op: ClassVar[str] = "job"
    cid: Id = ""
    uid: Id = ""
    oob: int = 0
    pin: list[Any] | None = None
    #: seconds the job may run (the node ends it Terminated after that)
    timeout: float | None = None
    #: higher first (dispyscheduler's queue)
    priority: int = 0

    @classmethod
    def parse(cls, header: dict[str, Any]) -> Job:
        # one per job at every node: checked by hand, as Record.parse would (a unit test
        # holds the two to the same verdicts); the generic parse costs ~10 us
        get = header.get
        reply, cid, uid, oob = get("reply"), get("cid"), get("uid"), get("oob")
        pin, timeout, priority = get("pin"), get("timeout"), get("priority")
        for name, value in (("reply", reply), ("cid", cid), ("uid", uid)):
            if value is not None and (not isinstance(value, str) or not ID.fullmatch(value)):
                raise MessageError(f"{name!r} is not a valid id: {str(value)[:40]!r}")
        for name, value in (("oob", oob), ("priority", priority)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise MessageError(f"{name!r} is not an integer")
        if pin is not None and (not isinstance(pin, list) or len(pin) > MAX_LIST):
            raise MessageError("'pin' is not a list")
        if timeout is not None:
            timeout = check_float("timeout", timeout)
        return cls(reply=reply, cid="" if cid is None else cid, uid="" if uid is None else uid,
                   oob=0 if oob is None else oob, pin=pin, timeout=timeout,
                   priority=0 if priority is None else priority)

    def header(self) -> dict[str, Any]:
        # one per job: written out (Record.header loops over the fields), the same dict
        out = {"op": "job", "cid": self.cid, "uid": self.uid, "oob": self.oob,
               "priority": self.priority}
        if self.reply is not None:
            out["reply"] = self.reply
        if self.pin is not None:
            out["pin"] = self.pin
        if self.timeout is not None:
            out["timeout"] = self.timeout
        return out


@dataclass(repr=False, eq=False)
class Cancel(Record):
    op: ClassVar[str] = "cancel"
    cid: Id = ""
    uid: Id = ""


@dataclass(repr=False, eq=False)
class Close(Record):
    op: ClassVar[str] = "close"
    cid: Id = ""
    terminate: bool = False
    keep: bool = False


@dataclass(repr=False, eq=False)
class Ack(Record):
    op: ClassVar[str] = "ack"
    uids: list[Id] = field(default_factory=list)


@dataclass(repr=False, eq=False)
class JobsQuery(Record):
    op: ClassVar[str] = "jobs_query"
    uids: list[Id] = field(default_factory=list)


@dataclass(repr=False, eq=False)
class File(Record):
    op: ClassVar[str] = "file"
    cid: Id = ""
    path: str = ""
    size: int = 0
    offset: int = 0
    final: bool = True
    mtime: float | None = None
    mtime_ns: int | None = None
    mode: int = 0o644
    job: Id | None = None
    node: list[Any] | None = None
    xfer: Id | None = None


@dataclass(repr=False, eq=False)
class FilesCheck(Record):
    op: ClassVar[str] = "files_check"
    cid: Id = ""
    files: list[dict] = field(default_factory=list)


@dataclass(repr=False, eq=False)
class Schedule(Record):
    op: ClassVar[str] = "schedule"
    cid: Id = ""


@dataclass(repr=False, eq=False)
class NodeControl(Record):
    """allocate_node, deallocate_node, close_node, resetup_node, set_node_cpus
    (dispyscheduler)."""
    op: ClassVar[str] = "node_control"
    cid: Id = ""
    node: list[Any] | None = None
    allocs: list[Any] | None = None
    terminate: bool = False
    cpus: int | None = None
    depends: list[str] | None = None


class AllocateNode(NodeControl):
    op: ClassVar[str] = "allocate_node"


class DeallocateNode(NodeControl):
    op: ClassVar[str] = "deallocate_node"


class CloseNode(NodeControl):
    op: ClassVar[str] = "close_node"


class ResetupNode(NodeControl):
    op: ClassVar[str] = "resetup_node"


class SetNodeCpus(NodeControl):
    op: ClassVar[str] = "set_node_cpus"


@dataclass(repr=False, eq=False)
class SharedCompute(Compute):
    """A computation given to dispyscheduler: also how it is shared and its nodes."""
    reentrant: bool = False
    exclusive: bool = False
    program: str | None = None
    #: relative paths of the files that follow (depends)
    files: list[str] = field(default_factory=list)
    #: NodeAllocate specs (client/nodes.py alloc_specs); setup_args blobs follow
    allocs: list[Any] = field(default_factory=list)


#: the fields each op must carry (beyond defaults): ids a handler relies on
REQUIRED: dict[str, tuple[str, ...]] = {
    "compute": ("cid",), "setup": ("cid",), "job": ("cid", "uid"), "cancel": ("cid", "uid"),
    "close": ("cid",), "file": ("cid", "path", "size"), "files_check": ("cid",),
    "schedule": ("cid",), "allocate_node": ("cid",), "deallocate_node": ("cid",),
    "close_node": ("cid",), "resetup_node": ("cid",), "set_node_cpus": ("cid",),
}

CLIENT_REQUESTS: dict[str, type[Record]] = {
    "compute": Compute, "setup": Setup, "job": Job, "cancel": Cancel, "close": Close,
    "ack": Ack, "jobs_query": JobsQuery, "file": File, "files_check": FilesCheck,
    "schedule": Schedule, "allocate_node": AllocateNode, "deallocate_node": DeallocateNode,
    "close_node": CloseNode, "resetup_node": ResetupNode, "set_node_cpus": SetNodeCpus,
}


#: what dispyscheduler accepts from a program: a computation comes with how it is shared
SCHEDULER_REQUESTS: dict[str, type[Record]] = {
    "compute": SharedCompute, "schedule": Schedule, "close": Close, "file": File, "job": Job,
    "cancel": Cancel, "ack": Ack, "jobs_query": JobsQuery, "allocate_node": AllocateNode,
    "deallocate_node": DeallocateNode, "close_node": CloseNode, "resetup_node": ResetupNode,
    "set_node_cpus": SetNodeCpus,
}


def parse_request(header: dict[str, Any], bufs: list[Any] | None = None,
                  requests: dict[str, type[Record]] = CLIENT_REQUESTS,
                  op: str | None = None) -> Record:
    """The typed record of a program's request (to a node, or with ``requests``
    SCHEDULER_REQUESTS to dispyscheduler), read as ``op`` when given (a journaled
    request is the op it was stored as); MessageError says what is wrong."""
    record = parse_op(header, requests, "request", REQUIRED, op)
    if isinstance(record, Job):
        nonneg("oob", record.oob)
        if bufs is not None and record.oob > len(bufs):
            raise MessageError("'oob' counts more buffers than the job carries")
        if record.timeout is not None and not 0 < record.timeout < float("inf"):
            raise MessageError("'timeout' is not a positive number of seconds")
    elif isinstance(record, File):
        nonneg("size", record.size)
        nonneg("offset", record.offset)
        if record.offset > record.size:
            raise MessageError("'offset' is past 'size'")
    return record


def id_field(header: dict[str, Any], name: str) -> str:
    """``header[name]`` when it is a string, else "" (which no id equals): the cid or uid
    a peer named, to look up, where a missing or malformed one must match nothing."""
    value = header.get(name)
    return value if isinstance(value, str) else ""


# ---- what a node (or dispyscheduler) sends a program ------------------------------------


@dataclass(repr=False, eq=False)
class LaneReady(Record):
    """The first record on a lane, from the job process that now serves it (its pid):
    from then on the program may send it jobs there (client/lanes.py)."""
    op: ClassVar[str] = "lane_ready"
    pid: int = 0


@dataclass(repr=False, eq=False)
class LaneRefused(Record):
    """The node's answer on a lane it does not hand over (then it closes it); ``later``:
    asking again soon may work (its job processes are still starting)."""
    op: ClassVar[str] = "lane_refused"
    reason: str = ""
    later: bool = False


@dataclass(repr=False, eq=False)
class Done(Record):
    """A job's result; buffers: result, stdout, stderr, then out-of-band ones. A job
    process sends it without ``cid`` (the node adds it: ``client_header``)."""
    op: ClassVar[str] = "done"
    uid: Id = ""
    cid: Id | None = None
    status: int = 0
    start_time: float = 0.0
    end_time: float = 0.0
    exception: str | None = None
    oob: int = 0
    #: stdout and stderr are text (a function's), not bytes (a program's)
    text: bool = True

    @classmethod
    def parse(cls, header: dict[str, Any]) -> Done:
        # the one message per job: checked by hand (the generic parse costs ~10 us)
        f = _done_fields(header)
        return cls(uid=f[0], cid=f[1], status=0 if f[2] is None else f[2],
                   start_time=f[3] or 0.0, end_time=f[4] or 0.0, exception=f[5],
                   oob=f[6] or 0, text=True if f[7] is None else f[7])

    def header(self) -> dict[str, Any]:
        # one per job from every job process: written out (Record.header loops)
        out = self.client_header(self.cid)
        if self.cid is None:
            del out["cid"]
        if self.exception is None:
            del out["exception"]
        if self.reply is not None:
            out["reply"] = self.reply
        return out

    def client_header(self, cid: str | None) -> dict[str, Any]:
        """The "done" frame the client gets (and the node keeps until it is acked)."""
        return {"op": "done", "uid": self.uid, "cid": cid, "status": self.status,
                "start_time": self.start_time, "end_time": self.end_time,
                "exception": self.exception, "text": self.text, "oob": self.oob}


def _done_fields(header: dict[str, Any]) -> tuple:
    """A result header's fields, checked, None where absent: (uid, cid, status,
    start_time, end_time, exception, oob, text)."""
    get = header.get
    uid, cid, status, oob = get("uid"), get("cid"), get("status"), get("oob")
    exc, text = get("exception"), get("text")
    if not isinstance(uid, str) or not ID.fullmatch(uid):
        raise MessageError("'done' without a valid 'uid'")
    if cid is not None and (not isinstance(cid, str) or not ID.fullmatch(cid)):
        raise MessageError("'done' with a malformed 'cid'")
    if (status is not None and type(status) is not int) or \
            (oob is not None and (type(oob) is not int or oob < 0)):
        raise MessageError("'done' with a malformed 'status' or 'oob'")
    start, end = get("start_time"), get("end_time")
    if start is not None:
        start = check_float("start_time", start)
    if end is not None:
        end = check_float("end_time", end)
    if exc is not None and not isinstance(exc, str):
        raise MessageError("'done' with a malformed 'exception'")
    if text is not None and type(text) is not bool:
        raise MessageError("'done' with a malformed 'text'")
    return uid, cid, status, start, end, exc, oob, text


@dataclass(repr=False, eq=False)
class SetupDone(Record):
    op: ClassVar[str] = "setup_done"
    cid: Id = ""
    ok: bool = False
    reason: str | None = None
    cpus: int | None = None


@dataclass(repr=False, eq=False)
class Provisional(Record):
    op: ClassVar[str] = "provisional"
    uid: Id = ""
    cid: Id | None = None


@dataclass(repr=False, eq=False)
class JobRefused(Record):
    op: ClassVar[str] = "job_refused"
    uid: Id = ""
    cid: Id | None = None
    reason: str | None = None
    #: Terminated when the node killed it (its service window ended)
    status: int | None = None


@dataclass(repr=False, eq=False)
class ComputationLost(Record):
    op: ClassVar[str] = "computation_lost"
    cid: Id = ""
    reason: str = "?"


@dataclass(repr=False, eq=False)
class Closed(Record):
    op: ClassVar[str] = "closed"
    cid: Id = ""
    #: how the computation's cleanup failed on the node (its traceback, at most the last
    #: MAX_PROBLEM characters), if it did
    problem: str | None = None


#: the end of a failed cleanup's traceback that is passed on
MAX_PROBLEM = 64 * 1024


@dataclass(repr=False, eq=False)
class Pulse(Record):
    op: ClassVar[str] = "pulse"
    busy: int | None = None
    avail_info: dict | None = None


@dataclass(repr=False, eq=False)
class SendFile(Record):
    """A job's ``dispy_send_file``; buffers: the file's bytes."""
    op: ClassVar[str] = "send_file"
    cid: Id = ""
    path: str = ""
    size: int = 0
    mtime: float | None = None
    mode: int = 0o644


@dataclass(repr=False, eq=False)
class Cpus(Record):
    """The node's usable CPUs changed (dispyadmin, service window)."""
    op: ClassVar[str] = "cpus"
    cpus: int = 0


@dataclass(repr=False, eq=False)
class Reply(Record):
    """The answer to a request that named a ``reply`` token."""
    op: ClassVar[str] = "reply"
    ok: bool | None = None
    reason: str | None = None
    #: files_check: the files the node lacks
    paths: list[str] | None = None
    #: jobs_query: the jobs the node does not know
    unknown: list[str] | None = None
    #: dispyscheduler's node control: 0, or -1 (with ``reason``)
    rc: int | None = None
    #: a program's NodeAllocate.allocate for dispyscheduler: CPUs and files for the node
    cpus: int | None = None
    depends: list[str] | None = None


# ---- what dispyscheduler sends a program (besides the node messages it relays) ----------


@dataclass(repr=False, eq=False)
class Scheduled(Record):
    """The computation is admitted: its jobs run."""
    op: ClassVar[str] = "scheduled"
    cid: Id = ""


@dataclass(repr=False, eq=False)
class Waiting(Record):
    """The computation waits (another one holds the nodes exclusively)."""
    op: ClassVar[str] = "waiting"
    cid: Id = ""
    reason: str = ""


@dataclass(repr=False, eq=False)
class Refused(Record):
    op: ClassVar[str] = "refused"
    cid: Id = ""
    reason: str = ""


@dataclass(repr=False, eq=False)
class SchedulerStopping(Record):
    op: ClassVar[str] = "scheduler_stopping"
    cid: Id = ""


@dataclass(repr=False, eq=False)
class JobStatus(Record):
    """A job of the program changed status at the scheduler (queued again, running)."""
    op: ClassVar[str] = "job_status"
    cid: Id = ""
    uid: Id = ""
    status: int = 0
    start_time: float | None = None
    ip: str | None = None
    port: int | None = None


@dataclass(repr=False, eq=False)
class NodeEvent(Record):
    """A node event of the computation (DispyNode status), with the node as JSON."""
    op: ClassVar[str] = "node"
    cid: Id = ""
    status: int = 0
    node: dict = field(default_factory=dict)


@dataclass(repr=False, eq=False)
class AskAllocate(Record):
    """What does the program's own NodeAllocate.allocate say for this node?"""
    op: ClassVar[str] = "allocate"
    cid: Id = ""
    alloc: int = 0
    node: dict = field(default_factory=dict)


@dataclass(repr=False, eq=False)
class JobResult(Record):
    """A job's end as dispyscheduler passes it to its program: the node's Done under the
    program's ids, with the node that ran it (none when the scheduler ended the job);
    buffers as the node sent them. A field the node left out stays out (the program's
    sink reads the header as a node's)."""
    op: ClassVar[str] = "done"
    uid: Id = ""
    cid: Id | None = None
    status: int | None = None
    start_time: float | None = None
    end_time: float | None = None
    exception: str | None = None
    #: stdout and stderr are text (a function's), not bytes (a program's)
    text: bool | None = None
    oob: int | None = None
    ip: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, header: dict[str, Any]) -> JobResult:
        # one per job at the scheduler and at the program: checked by hand, as Done
        uid, cid, status, start, end, exc, oob, text = _done_fields(header)
        ip, port = header.get("ip"), header.get("port")
        if (ip is not None and not isinstance(ip, str)) or \
                (port is not None and type(port) is not int):
            raise MessageError("'done' with a malformed 'ip' or 'port'")
        return cls(uid=uid, cid=cid, status=status, start_time=start, end_time=end,
                   exception=exc, text=text, oob=oob, ip=ip, port=port)

    @classmethod
    def of(cls, done: Done, uid: str, cid: str, ip: str | None = None,
           port: int | None = None) -> JobResult:
        """A node's result as the program's job ``uid`` of its computation ``cid``;
        ``ip`` and ``port`` name the node that ran it."""
        return cls(uid=uid, cid=cid, status=done.status, start_time=done.start_time,
                   end_time=done.end_time, exception=done.exception, text=done.text,
                   oob=done.oob, ip=ip, port=port)


NODE_MESSAGES: dict[str, type[Record]] = {
    "done": Done, "setup_done": SetupDone, "provisional": Provisional,
    "job_refused": JobRefused, "computation_lost": ComputationLost, "closed": Closed,
    "pulse": Pulse, "send_file": SendFile, "cpus": Cpus,
}
NODE_REQUIRED: dict[str, tuple[str, ...]] = {
    "setup_done": ("cid",), "provisional": ("uid",), "job_refused": ("uid",),
    "computation_lost": ("cid",), "closed": ("cid",), "send_file": ("cid", "path"),
    "cpus": ("cpus",),
}


def parse_node_message(header: dict[str, Any]) -> Record:
    """The typed record of a frame from a node; MessageError says what is wrong (the
    frame is then dropped, the connection kept)."""
    record = parse_op(header, NODE_MESSAGES, "message", NODE_REQUIRED)
    if isinstance(record, Cpus):
        nonneg("cpus", record.cpus)
    return record


def parse_reply(header: dict[str, Any]) -> Reply:
    """The typed record of a reply to a request; MessageError says what is wrong."""
    if header.get("op") != "reply":
        raise MessageError(f"not a reply: {str(header.get('op'))[:40]!r}")
    return typing.cast(Reply, Reply.parse(header))


#: what dispyscheduler sends a program: its own messages and the node messages it relays
SCHEDULER_MESSAGES: dict[str, type[Record]] = {
    "done": JobResult, "job_status": JobStatus, "provisional": Provisional,
    "node": NodeEvent, "send_file": SendFile, "allocate": AskAllocate, "reply": Reply,
    "scheduled": Scheduled, "waiting": Waiting, "refused": Refused, "closed": Closed,
    "scheduler_stopping": SchedulerStopping, "pulse": Pulse,
}
SCHEDULER_REQUIRED: dict[str, tuple[str, ...]] = {
    "job_status": ("cid", "uid", "status"), "provisional": ("uid",),
    "node": ("cid", "node"), "send_file": ("cid", "path"), "allocate": ("cid", "alloc"),
    "scheduled": ("cid",), "waiting": ("cid",), "refused": ("cid",), "closed": ("cid",),
}


def parse_scheduler_message(header: dict[str, Any]) -> Record:
    """The typed record of a frame from dispyscheduler; MessageError says what is wrong
    (the program then drops the frame and keeps the connection)."""
    return parse_op(header, SCHEDULER_MESSAGES, "message", SCHEDULER_REQUIRED)
