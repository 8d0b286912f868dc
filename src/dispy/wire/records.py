"""The base of every typed wire record: fields checked by their type on decode.

A record is a frozen dataclass with a class-level ``op``; ``parse`` checks a decoded
header field by field against the annotations (required fields present, each of its
type, ids of a fixed alphabet and length as they may become directory names, lists
bounded) and ``header`` gives the dict a frame carries. The message modules
(messages, hostmsg, adminmsg, discoverymsg) define the records of each protocol.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

#: ids (computation, job, transfer, reply tokens): also safe as one path component
ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._:-]{0,127}")
MAX_LIST = 1 << 20


class MessageError(ValueError):
    """A header that does not fit its op's record; the message is refused."""


class IdMark:
    """Marks a field that must match ``ID``."""


@dataclass(frozen=True)
class Range:
    """Marks an int field: ``low <= value <= high``."""

    low: int
    high: int


#: an id field: a str (to mypy and to senders) that decoding checks against ``ID``
Id = Annotated[str, IdMark]


@dataclass(frozen=True)
class Record:
    op: ClassVar[str] = ""
    #: request token the peer wants a ``reply`` frame for
    reply: Id | None = None

    @classmethod
    def parse(cls, header: dict[str, Any]) -> Record:
        values = {}
        hints = type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in header or header[f.name] is None:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise MessageError(f"{cls.op!r} without {f.name!r}")
                continue
            values[f.name] = check_value(f.name, header[f.name], hints[f.name])
        return cls(**values)

    def header(self) -> dict[str, Any]:
        """The frame header of this record: its op and every field that is set."""
        out: dict[str, Any] = {"op": self.op}
        for name in field_names(type(self)):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def field_names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


_NAMES: dict[type, tuple[str, ...]] = {}


def type_hints(cls: type) -> dict[str, Any]:
    cached = _HINTS.get(cls)
    if cached is None:
        cached = _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return cached


_HINTS: dict[type, dict[str, Any]] = {}


def check_value(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        errors = []
        for option in options:
            try:
                return check_value(name, value, option)
            except MessageError as exc:
                errors.append(str(exc))
        raise MessageError(errors[0])
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list) or len(value) > MAX_LIST:
            raise MessageError(f"{name!r} is not a list")
        return [check_value(name, v, item) for v in value]
    if origin is Annotated:
        marks = hint.__metadata__
        if IdMark in marks:
            if not isinstance(value, str) or not ID.fullmatch(value):
                raise MessageError(f"{name!r} is not a valid id: {str(value)[:40]!r}")
            return value
        value = check_value(name, value, hint.__origin__)
        for mark in marks:
            if isinstance(mark, Range) and not mark.low <= value <= mark.high:
                raise MessageError(f"{name!r} is out of range: {value}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise MessageError(f"{name!r} is not true/false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MessageError(f"{name!r} is not an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MessageError(f"{name!r} is not a number")
        return as_float(name, value)
    if hint is str:
        if not isinstance(value, str):
            raise MessageError(f"{name!r} is not a string")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise MessageError(f"{name!r} is not an object")
        return value
    if hint is Any:
        return value
    raise TypeError(f"no check for {hint!r}")


def as_float(name: str, value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int past any float: a MessageError, as any bad value
        raise MessageError(f"{name!r} is out of range") from None


def nonneg(name: str, value: int) -> None:
    if value < 0:
        raise MessageError(f"{name!r} is negative")


def parse_op(header: dict[str, Any], table: dict[str, type[Record]], what: str,
             required: dict[str, tuple[str, ...]] | None = None,
             op: str | None = None) -> Record:
    """The record of ``header`` by its op (or ``op``) in ``table``; MessageError for an
    unknown op, a field ``required`` names for it missing, or any field malformed."""
    name = header.get("op") if op is None else op
    if not isinstance(name, str) or name not in table:
        raise MessageError(f"unknown {what} {str(name)[:40]!r}")
    for field_name in (required or {}).get(name, ()):
        if header.get(field_name) is None:
            raise MessageError(f"{name!r} without {field_name!r}")
    return table[name].parse(header)
