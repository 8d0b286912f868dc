"""The base of every typed wire record: fields checked by their type on decode.

A record is a dataclass with a class-level ``op``; ``parse`` checks a decoded
header field by field against the annotations (required fields present, each of its
type, ids of a fixed alphabet and length as they may become directory names, lists
bounded) and ``header`` gives the dict a frame carries. The message modules
(messages, hostmsg, adminmsg, discoverymsg) define the records of each protocol.

Records are not ``frozen``, though none is changed once made (``dataclasses.replace``
makes a changed copy): a frozen dataclass's ``__init__`` sets each field through
``object.__setattr__``, 1.1 us more for a result's nine fields, and a job costs the
client three records (Job, Send, Done) and its node two more.
"""

from __future__ import annotations

import dataclasses
import re
import reprlib
import types
import typing
from collections.abc import Callable, Iterable
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


class Plain:
    """``__repr__``, ``__eq__`` and ``__hash__`` of a record, from its fields, written
    once here: the ones ``dataclass`` generates cost an ``exec`` each per class, half of
    what importing the wire's records took (records are declared with ``repr=False,
    eq=False``)."""

    __slots__ = ()

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}"
                           for name in field_names(type(self)))
        return f"{type(self).__qualname__}({values})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        names = field_names(type(self))  # as tuples, as dataclass compares: a value is
        return (tuple(getattr(self, name) for name in names)  # equal to itself (nan)
                == tuple(getattr(other, name) for name in names))

    def __hash__(self) -> int:  # (with the class: records of two classes are never equal)
        return hash((type(self), *(getattr(self, name) for name in field_names(type(self)))))


@dataclass(repr=False, eq=False)
class Record(Plain):
    op: ClassVar[str] = ""
    #: request token the peer wants a ``reply`` frame for
    reply: Id | None = None

    @classmethod
    def parse(cls, header: dict[str, Any]) -> Record:
        plan = _PLANS.get(cls)
        if plan is None:
            plan = _PLANS[cls] = parse_plan(cls)
        values = {}
        get = header.get
        for name, required, check in plan:
            value = get(name)
            if value is None:
                if required:
                    raise MessageError(f"{cls.op!r} without {name!r}")
                continue
            values[name] = check(value)
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

#: a value checker: the checked value, or MessageError
Check = Callable[[Any], Any]


def parse_plan(cls: type) -> tuple[tuple[str, bool, Check], ...]:
    """(field, required, checker) of each field of record ``cls``, for ``parse``."""
    hints = type_hints(cls)
    return tuple((f.name, f.default is dataclasses.MISSING
                  and f.default_factory is dataclasses.MISSING,
                  _checker(f.name, hints[f.name])) for f in dataclasses.fields(cls))


_PLANS: dict[type, tuple[tuple[str, bool, Check], ...]] = {}


def warm(classes: Iterable[type[Record]] | None = None) -> None:
    """Work out the parse plans of ``classes`` (default: every record class defined so
    far) now: the first frame of a kind otherwise pays 50-100 us
    (``typing.get_type_hints``) in the middle of a handshake or a first job. For a
    process about to serve (a daemon before it listens, a computation host before it
    forks job processes, which inherit them) or waiting on the network."""
    stack = list(Record.__subclasses__() if classes is None else classes)
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls not in _PLANS:
            try:
                _PLANS[cls] = parse_plan(cls)
            except Exception:  # (its hints do not resolve): worked out, or refused, when
                continue  # a frame of it comes, as without this


def _checker(name: str, hint: Any) -> Check:
    """``compile_check``; for a hint it cannot compile (e.g. a bare ``typing.List``), a
    checker that fails as ``check_value`` always did: when a value comes, not before."""
    try:
        return compile_check(name, hint)
    except Exception:
        return lambda value: compile_check(name, hint)(value)


def compile_check(name: str, hint: Any) -> Check:
    """``check_value(name, value, hint)`` as a function of ``value``, with every choice
    that depends only on ``hint`` made now: a record is parsed per frame (the scheduler's
    job_status, one per job, took 14 us through ``check_value``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_checker(name, a) for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return options[0]

        def union(value: Any) -> Any:
            errors = []
            for option in options:
                try:
                    return option(value)
                except MessageError as exc:
                    errors.append(str(exc))
            raise MessageError(errors[0])
        return union
    if origin is list:
        (item,) = typing.get_args(hint)
        check_item = _checker(name, item)

        def listed(value: Any) -> Any:
            if not isinstance(value, list) or len(value) > MAX_LIST:
                raise MessageError(f"{name!r} is not a list")
            return [check_item(v) for v in value]
        return listed
    if origin is Annotated:
        marks = hint.__metadata__
        if IdMark in marks:
            def ident(value: Any) -> Any:
                if not isinstance(value, str) or not ID.fullmatch(value):
                    raise MessageError(f"{name!r} is not a valid id: {str(value)[:40]!r}")
                return value
            return ident
        inner = _checker(name, hint.__origin__)
        ranges = [mark for mark in marks if isinstance(mark, Range)]

        def ranged(value: Any) -> Any:
            value = inner(value)
            for mark in ranges:
                if not mark.low <= value <= mark.high:
                    raise MessageError(f"{name!r} is out of range: {value}")
            return value
        return ranged
    try:
        simple = _SIMPLE.get(hint) if origin is None else None
    except TypeError:  # an unhashable hint: none of these
        simple = None
    if simple is not None:
        return lambda value: simple(name, value)
    if hint is dict or origin is dict:
        return lambda value: _check_dict(name, value)
    if hint is Any:
        return lambda value: value

    def unknown(value: Any) -> Any:
        raise TypeError(f"no check for {hint!r}")
    return unknown


def _of_type(kind: type, what: str) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if not isinstance(value, kind):
            raise MessageError(f"{name!r} is not {what}")
        return value
    return check


def _check_int(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{name!r} is not an integer")
    return value


def check_float(name: str, value: Any) -> Any:
    """A number field as a float (an int too, not a bool); MessageError otherwise."""
    if type(value) is float:  # (the common case: a time in every result)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(f"{name!r} is not a number")
    return as_float(name, value)


_check_dict = _of_type(dict, "an object")
_SIMPLE: dict[Any, Callable[[str, Any], Any]] = {
    bool: _of_type(bool, "true/false"), int: _check_int, float: check_float,
    str: _of_type(str, "a string")}


def check_value(name: str, value: Any, hint: Any) -> Any:
    """``value`` of field ``name`` checked against its type ``hint`` (MessageError)."""
    # keyed by the repr too: unions equal in any order (int | float == float | int) try
    # their options in their own order
    try:
        key = (name, hint, repr(hint))
        check = _CHECKS.get(key)
    except TypeError:  # an unhashable hint
        return _checker(name, hint)(value)
    if check is None:
        check = _CHECKS[key] = _checker(name, hint)
    return check(value)


_CHECKS: dict[tuple[str, Any, str], Check] = {}


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
