"""Typed records of the discovery datagrams (wire/discovery.py carries them as JSON).

``discover`` (a program asks), ``node`` (a node answers or announces itself) and
``relay`` (a dispynetrelay answers) are checked field by field when decoded: every field
of its type, ports within 1..65535, counts not negative, ids of the alphabet of
wire/messages.py. Fields a record does not know are ignored (a later version may add
some), a known one of the wrong type refuses the whole datagram, so no receiver reads
an address or a port it did not check.

The records encode to the very JSON objects the dicts did: ``proto`` and ``op`` first,
then the fields in their order, unset ones left out except ``NULLS`` (written as null,
as the node always did for ``ip_addr`` and ``busy_with``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from ..config import PROTOCOL_VERSION
from .records import Id, MessageError, Plain, Range, check_value, field_names, type_hints


class DiscoveryError(MessageError):
    """A datagram that is no well-formed discovery message; it is dropped."""


class UnknownMessage(DiscoveryError):
    """A well-formed datagram of an op this receiver has no record for (ignored)."""


Port = Annotated[int, Range(1, 65535)]
#: a port that may be 0: "none" (a program bound to an ephemeral port names it so)
AnyPort = Annotated[int, Range(0, 65535)]
Count = Annotated[int, Range(0, 1 << 31)]


@dataclass(kw_only=True, repr=False, eq=False)
class DiscoveryMessage(Plain):
    op: ClassVar[str] = ""
    #: fields written even when None (receivers of this version read them by key)
    NULLS: ClassVar[tuple[str, ...]] = ()
    #: the sender's protocol version; None when its datagram named none
    proto: int | None = PROTOCOL_VERSION

    @classmethod
    def parse(cls, msg: Mapping[str, Any]) -> DiscoveryMessage:
        """The record of JSON object ``msg`` (of this record's op); DiscoveryError says
        what is wrong."""
        hints = type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = msg.get(f.name)
            if value is None:
                if f.default is dataclasses.MISSING:
                    raise DiscoveryError(f"{cls.op!r} without {f.name!r}")
                values[f.name] = None
            else:
                try:
                    values[f.name] = check_value(f.name, value, hints[f.name])
                except MessageError as exc:
                    raise DiscoveryError(str(exc)) from None
        return cls(**values)

    def as_json(self) -> dict[str, Any]:
        """The JSON object this record travels as."""
        out: dict[str, Any] = {
            "proto": PROTOCOL_VERSION if self.proto is None else self.proto, "op": self.op}
        for name in _names(type(self)):
            value = getattr(self, name)
            if value is not None or name in self.NULLS:
                out[name] = value
        return out


@dataclass(kw_only=True, repr=False, eq=False)
class Discover(DiscoveryMessage):
    """A program asks for nodes (wire/discovery.py ``discover`` builds and signs it)."""

    op: ClassVar[str] = "discover"
    #: where the answers go (the source address, never one named in the datagram)
    reply_port: Port
    client_id: Id
    #: where the sender hears later announcements (node/listeners.py)
    announce_port: AnyPort | None = None
    #: the sender's public address behind NAT (trusted only when signed)
    ext_ip_addr: str | None = None
    #: signature (``ts``, ``auth``) with the secret: a dispynetrelay with one needs it
    ts: int | None = None
    auth: str | None = None
    #: fills the datagram to ``DISCOVER_SIZE``, the room a node's answer may take
    pad: str | None = None


@dataclass(kw_only=True, repr=False, eq=False)
class NodeAnnouncement(DiscoveryMessage):
    """A node answers a ``discover`` or announces itself: node/daemon.py ``info``."""

    op: ClassVar[str] = "node"
    NULLS: ClassVar[tuple[str, ...]] = ("ip_addr", "busy_with")
    name: str | None = None
    version: str | None = None
    port: Port
    node_id: Id | None = None
    #: the address to connect to (``--ext_ip_addr`` behind NAT); None: the sender's
    ip_addr: str | None = None
    cpus: Count | None = None
    busy: Count | None = None
    #: the client the node serves (or why it serves none); None: free
    busy_with: str | None = None
    platform: str | None = None
    avail_info: dict | None = None
    accepting: bool | None = None

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> NodeAnnouncement:
        """The announcement of a node's ``info`` (its fields this record knows)."""
        return cls(**{name: info[name] for name in _names(cls) if name in info})

    def lean(self) -> LeanNodeAnnouncement:
        """Only what a program needs to connect: the answer to a small request."""
        return LeanNodeAnnouncement(
            version=self.version, port=self.port, node_id=self.node_id,
            ip_addr=self.ip_addr,
            busy_with=str(self.busy_with)[:200] if self.busy_with else None)


@dataclass(kw_only=True, repr=False, eq=False)
class LeanNodeAnnouncement(NodeAnnouncement):
    """A ``node`` datagram without the details (decoded, it is a NodeAnnouncement)."""

    NULLS: ClassVar[tuple[str, ...]] = ("version", "port", "node_id", "ip_addr")


@dataclass(kw_only=True, repr=False, eq=False)
class RelayAnnouncement(DiscoveryMessage):
    """A dispynetrelay answers a ``discover``: the address asked relays, runs no jobs."""

    op: ClassVar[str] = "relay"
    #: the relay's host name (for the log)
    name: str | None = None
    #: where the relay takes requests
    port: Port


MESSAGES: dict[str, type[DiscoveryMessage]] = {
    "discover": Discover, "node": NodeAnnouncement, "relay": RelayAnnouncement}


def parse(msg: Mapping[str, Any]) -> DiscoveryMessage:
    """The record of a decoded datagram; UnknownMessage for an op without one,
    DiscoveryError for anything malformed."""
    op = msg.get("op")
    cls = MESSAGES.get(op) if isinstance(op, str) else None
    if cls is None:
        raise UnknownMessage(f"unknown discovery message {str(op)[:40]!r}")
    return cls.parse(msg)


def _names(cls: type) -> tuple[str, ...]:
    """The fields after ``op`` (``proto`` travels first, before it)."""
    return tuple(name for name in field_names(cls) if name != "proto")
