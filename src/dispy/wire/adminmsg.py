"""Typed records of the dispyadmin link: web/admin_link.py asks, node/admin.py answers.

The admin role may read a node's details and set its CPUs, service times and number of
clients to serve, nothing else. A request is checked against its record before the node
acts on it: an op the role does not have is refused by name, and so is a field of the
wrong kind, with the reason the operator sees in dispyadmin. What depends on the node
itself (its CPU count, the HH:MM of a time, its clock) the node checks when it acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .records import ID, MessageError, Record

#: the service times dispyadmin sets
CONTROLS = ("start", "stop", "end")


class AdminMessageError(MessageError):
    """An admin request (or answer) that does not fit its record; it is refused."""


class NotAdminOperation(AdminMessageError):
    """A request for an op the admin role does not have (code, jobs, files...)."""

    def __init__(self, op: Any) -> None:
        super().__init__(f"{str(op)[:40]!r} is not an admin operation")
        #: what the request named (for the log)
        self.op = op


@dataclass(repr=False, eq=False)
class Info(Record):
    """Everything dispyadmin shows about the node."""
    op: ClassVar[str] = "info"

    @classmethod
    def parse(cls, header: dict[str, Any]) -> Info:
        return cls(reply=_token(header))


@dataclass(repr=False, eq=False)
class SetCpus(Record):
    """Use ``cpus`` CPUs: > 0 that many, < 0 all but that many, "all" all of them."""
    op: ClassVar[str] = "set_cpus"
    cpus: int | str = "all"

    @classmethod
    def parse(cls, header: dict[str, Any]) -> SetCpus:
        cpus = header.get("cpus")
        if cpus != "all" and (not isinstance(cpus, int) or isinstance(cpus, bool)):
            raise AdminMessageError(f"cpus must be an integer or 'all', not {cpus!r}")
        return cls(reply=_token(header), cpus=cpus)


@dataclass(repr=False, eq=False)
class ServiceTime(Record):
    """Set service time ``control`` to ``time``: "HH:MM", "now", or "" (clear it)."""
    op: ClassVar[str] = "service_time"
    control: str = "start"
    time: str = ""

    @classmethod
    def parse(cls, header: dict[str, Any]) -> ServiceTime:
        control, when = header.get("control"), header.get("time")
        if control not in CONTROLS:
            raise AdminMessageError(f"control must be one of {', '.join(CONTROLS)}")
        if when is not None and not isinstance(when, str):
            raise AdminMessageError(f"time must be HH:MM, 'now' or empty, not {when!r}")
        return cls(reply=_token(header), control=control, time=when or "")


@dataclass(repr=False, eq=False)
class Serve(Record):
    """Serve ``clients`` more clients after the current one (0: none, -1: forever)."""
    op: ClassVar[str] = "serve"
    clients: int = -1

    @classmethod
    def parse(cls, header: dict[str, Any]) -> Serve:
        clients = header.get("clients")
        if not isinstance(clients, int) or isinstance(clients, bool) or clients < -1:
            raise AdminMessageError(
                f"clients must be -1 (forever), 0 or a positive number, not {clients!r}")
        return cls(reply=_token(header), clients=clients)


@dataclass(repr=False, eq=False)
class Unlisted(Record):
    """A request for an op the admin role does not have, sent as it is named: the node,
    not the sender, refuses it (how a test proves the link runs no code)."""
    name: str = ""

    def header(self) -> dict[str, Any]:
        return {"op": self.name, "reply": self.reply}


AdminRequest = Info | SetCpus | ServiceTime | Serve

REQUESTS: dict[str, type[Info] | type[SetCpus] | type[ServiceTime] | type[Serve]] = {
    "info": Info, "set_cpus": SetCpus, "service_time": ServiceTime, "serve": Serve}


@dataclass(repr=False, eq=False)
class AdminReply(Record):
    """The node's answer to one request; ``ok`` False with ``error`` when refused."""
    op: ClassVar[str] = "reply"
    ok: bool = False
    error: str | None = None
    #: info: the node's details (node/admin.py ``info``)
    info: dict | None = None
    #: set_cpus: the CPUs the node uses now
    cpus: int | None = None
    #: service_time: the times as set (HH:MM or None, by control)
    service: dict | None = None
    #: service_time: kept, not applied yet (no window without a start and a stop or end)
    pending: bool | None = None
    text: str | None = None
    service_state: str | None = None
    #: serve: the number of clients asked for
    serve: int | None = None

    def fields(self) -> dict[str, Any]:
        """The answer's fields that are set (without op and token)."""
        out = self.header()
        del out["op"]
        out.pop("reply", None)
        return out


def request(op: str, **fields: Any) -> AdminRequest | Unlisted:
    """The record of admin request ``op`` with ``fields``; ``Unlisted`` for an op the
    role does not have (its fields are not sent: the node refuses it by name)."""
    cls = REQUESTS.get(op)
    return Unlisted(name=op) if cls is None else cls(**fields)


def parse_request(header: dict[str, Any]) -> AdminRequest:
    """The record of a request from dispyadmin; NotAdminOperation for an op the role does
    not have, AdminMessageError for a malformed one."""
    op = header.get("op")
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise NotAdminOperation(op)
    return cls.parse(header)


def refusal(header: dict[str, Any], reason: str) -> AdminReply:
    """The answer to a request that could not be parsed (its token, if it is one)."""
    token = header.get("reply")
    return AdminReply(reply=token if isinstance(token, str) and ID.fullmatch(token) else None,
                      ok=False, error=reason)


def parse_reply(header: dict[str, Any]) -> AdminReply:
    """The record of the node's answer; AdminMessageError for anything else."""
    if header.get("op") != AdminReply.op:
        raise AdminMessageError(f"expected a reply, not {str(header.get('op'))[:40]!r}")
    try:
        reply = AdminReply.parse(header)
    except MessageError as exc:
        raise AdminMessageError(str(exc)) from None
    assert isinstance(reply, AdminReply)
    return reply


def _token(header: dict[str, Any]) -> str | None:
    token = header.get("reply")
    if token is not None and (not isinstance(token, str) or not ID.fullmatch(token)):
        raise AdminMessageError(f"'reply' is not a valid token: {str(token)[:40]!r}")
    return token
