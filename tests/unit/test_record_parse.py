"""``Record.parse`` checks each field with a checker compiled once per record class
(``records.compile_check``): it must accept and refuse exactly what the field-by-field
reading of the type hints did before, for every record of every protocol."""

from __future__ import annotations

import dataclasses
import gc
import types
import typing
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispy.wire import adminmsg, discoverymsg, hostmsg, messages  # noqa: F401 (records)
from dispy.wire.records import (
    ID,
    MAX_LIST,
    Id,
    IdMark,
    MessageError,
    Range,
    Record,
    as_float,
    check_value,
    type_hints,
)

pytestmark = pytest.mark.timeout(120)


def reference_check(name: str, value: Any, hint: Any) -> Any:
    """The checks as they were written before they were compiled (the reference)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        errors = []
        for option in options:
            try:
                return reference_check(name, value, option)
            except MessageError as exc:
                errors.append(str(exc))
        raise MessageError(errors[0])
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list) or len(value) > MAX_LIST:
            raise MessageError(f"{name!r} is not a list")
        return [reference_check(name, v, item) for v in value]
    if origin is Annotated:
        marks = hint.__metadata__
        if IdMark in marks:
            if not isinstance(value, str) or not ID.fullmatch(value):
                raise MessageError(f"{name!r} is not a valid id: {str(value)[:40]!r}")
            return value
        value = reference_check(name, value, hint.__origin__)
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


def reference_parse(cls: type[Record], header: dict[str, Any]) -> Record:
    values = {}
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in header or header[f.name] is None:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise MessageError(f"{cls.op!r} without {f.name!r}")
            continue
        values[f.name] = reference_check(f.name, header[f.name], hints[f.name])
    return cls(**values)


def _records(base: type) -> list[type[Record]]:
    out = []
    for sub in base.__subclasses__():
        out.append(sub)
        out += _records(sub)
    return out


#: every record that parses with the generic parse (Job, Done, RunJob... have their own)
RECORDS = sorted({cls for cls in _records(Record) if cls.parse.__func__ is Record.parse.__func__},
                 key=lambda c: (c.__module__, c.__qualname__))

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
                     st.floats(), st.text(max_size=6),
                     st.sampled_from(["c1", "u-1.x", "../x", ".a", "a" * 130, "127.0.0.1"]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


def _verdict(parse: Any, header: dict) -> Any:
    try:
        return parse(header)
    except MessageError as exc:
        return ("refused", str(exc))
    except TypeError as exc:
        return ("TypeError", str(exc))


def test_every_generic_record_is_covered():
    assert len(RECORDS) > 30
    names = {cls.__name__ for cls in RECORDS}
    assert {"JobStatus", "NodeEvent", "Cancel", "File"} <= names


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_compiled_parse_agrees_with_the_reference(data):
    cls = data.draw(st.sampled_from(RECORDS))
    names = [f.name for f in dataclasses.fields(cls)] + ["op", "other"]
    header = data.draw(st.dictionaries(st.sampled_from(names), _values, max_size=len(names)))
    assert _verdict(cls.parse, header) == _verdict(lambda h: reference_parse(cls, h), header)


@given(st.sampled_from(RECORDS), st.data())
def test_check_value_agrees_with_the_reference(cls, data):
    hints = type_hints(cls)
    name = data.draw(st.sampled_from(sorted(hints)))
    value = data.draw(_values)
    assert _verdict(lambda v: check_value(name, v, hints[name]), value) == \
        _verdict(lambda v: reference_check(name, v, hints[name]), value)


TRICKY = [True, False, 0, -1, 7, 1 << 70, 1.5, float("nan"), float("inf"), "", "c1",
          "../x", "a" * 130, "127.0.0.1", [], ["c1"], [1], ["../x"], [[]], {}, {"a": 1}]


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_each_field_alone_gets_the_reference_verdict(cls):
    """Every field of every record, with each tricky value, beside good values of the
    others (so the verdict is about that field)."""
    good = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            for value in TRICKY:
                verdict = _verdict(
                    lambda v, name=f.name: reference_check(name, v, type_hints(cls)[name]),
                    value)
                if not (isinstance(verdict, tuple) and verdict[0] in ("refused", "TypeError")):
                    good[f.name] = value
                    break
    for f in dataclasses.fields(cls):
        for value in TRICKY:
            header = {**good, f.name: value}
            assert _verdict(cls.parse, header) == \
                _verdict(lambda h: reference_parse(cls, h), header), (f.name, value)


class _Unknown:
    """A type no check knows."""


SYNTHETIC = [int | float, float | int, int | str | None, bool | int, list[list[Id]],
             list[int] | None, Annotated[int, Range(0, 10)], Annotated[float, Range(-1, 1)],
             dict[str, int], dict, Any, _Unknown, _Unknown | None, int | _Unknown,
             typing.List, int | typing.List, list[Any]]  # noqa: UP006 (a bare List on purpose)


def _any_verdict(fn: Any, value: Any) -> Any:
    try:
        return ("ok", fn(value))
    except Exception as exc:  # noqa: BLE001 (the kind of failure is the verdict)
        return (type(exc).__name__, str(exc))


@pytest.mark.parametrize("hint", SYNTHETIC, ids=repr)
def test_check_value_on_made_up_hints_agrees_with_the_reference(hint):
    """Hints no record uses today, each with every tricky value: the same value, or the
    same kind of failure with the same message (and a bad hint fails only when a value
    comes, as before)."""
    for value in TRICKY:
        got = _any_verdict(lambda v: check_value("f", v, hint), value)
        want = _any_verdict(lambda v: reference_check("f", v, hint), value)
        if got[0] == "ok" and want[0] == "ok" and got[1] != got[1]:  # NaN
            continue
        assert got == want, (hint, value)


def test_equal_unions_in_another_order_keep_their_own_order():
    """int | float == float | int for typing: the cached checker must not be shared."""
    assert check_value("f", 3, int | float) == 3 and type(check_value("f", 3, int | float)) is int
    assert type(check_value("f", 3, float | int)) is float


def test_discovery_hints_agree_with_the_reference():
    """discoverymsg (UDP discovery) checks its fields with check_value, Range included."""
    for cls in _dataclasses_of(discoverymsg):
        for name, hint in type_hints(cls).items():
            if typing.get_origin(hint) is typing.ClassVar:
                continue
            for value in TRICKY:
                got = _any_verdict(lambda v, n=name, h=hint: check_value(n, v, h), value)
                want = _any_verdict(lambda v, n=name, h=hint: reference_check(n, v, h), value)
                assert got == want, (cls.__name__, name, value)


def _dataclasses_of(module: Any) -> list[type]:
    return [obj for obj in vars(module).values()
            if isinstance(obj, type) and dataclasses.is_dataclass(obj)
            and obj.__module__ == module.__name__]


def test_warm_works_out_the_plans_ahead(monkeypatch):
    """``records.warm`` (a daemon before it listens, a host before it forks, the client
    while it connects): every record class gets its plan, or only those given."""
    from dispy.wire import records

    monkeypatch.setattr(records, "_PLANS", {})
    records.warm([messages.Done, messages.SetupDone])
    assert set(records._PLANS) == {messages.Done, messages.SetupDone, hostmsg.DoneInFile,
                                   hostmsg.LaneDone, hostmsg.LaneDoneInFile}  # (of Done)
    records.warm()
    for module in (messages, hostmsg, adminmsg, discoverymsg):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, records.Record) \
                    and value is not records.Record:
                assert value in records._PLANS, value
    plan = records._PLANS[messages.Done]
    assert messages.Done.parse({"op": "done", "uid": "u1", "status": 5}).uid == "u1"
    assert records._PLANS[messages.Done] is plan  # parse uses the plan worked out


def test_warm_skips_a_class_whose_plan_cannot_be_worked_out(monkeypatch):
    """A record whose hints do not resolve keeps failing when a frame of it comes (as
    without ``warm``), and does not stop a daemon from starting."""
    from dispy.wire import records

    monkeypatch.setattr(records, "_PLANS", {})

    @dataclasses.dataclass
    class Broken(Record):
        op: typing.ClassVar[str] = "broken"
        x: NoSuchType = None  # type: ignore[name-defined]  # noqa: F821

    records.warm([Broken, messages.Done])
    assert Broken not in records._PLANS and messages.Done in records._PLANS
    with pytest.raises(NameError):
        Broken.parse({"op": "broken"})
    del Broken
    gc.collect()  # a Record subclass no more, for whoever lists them later
