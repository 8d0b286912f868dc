"""Records' repr, equality and hash (``records.Plain``) behave as dataclass's own: the
wire's records, the job life cycle's instructions and ``ClusterStats``."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from dispy.client.status import ClusterStats
from dispy.scheduling import lifecycle, nodesetup
from dispy.wire import discoverymsg, hostmsg, messages
from dispy.wire.records import Plain

pytestmark = pytest.mark.timeout(30)


def _all_records() -> list[type]:
    """Plain's subclasses (not the classes ``slots=True`` replaced and left behind)."""
    out, stack = [], [Plain]
    while stack:
        cls = stack.pop()
        if getattr(sys.modules[cls.__module__], cls.__qualname__, None) is cls:
            out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


def _twin(obj: object) -> object:
    """``obj`` as an instance of a class dataclass made with its own methods."""
    names = [f.name for f in dataclasses.fields(obj)]  # type: ignore[arg-type]
    twin = dataclasses.make_dataclass(type(obj).__qualname__, names, frozen=True)
    return twin(**{name: getattr(obj, name) for name in names})


@pytest.mark.parametrize("obj", [
    messages.Job(cid="c1", uid="u1", oob=2, timeout=1.5),
    messages.Done(uid="u", status=5, start_time=1.0, end_time=2.5, exception="x\ny"),
    hostmsg.Fork(count=3),
    discoverymsg.Discover(reply_port=5, client_id="c1", ts=7),
    lifecycle.End(uid="u", cid="c", status=5, reason="r"),
    nodesetup.NodeChanged(cid="c", node=("1.2.3.4", 5, None), change=nodesetup.Change.READY),
], ids=lambda o: type(o).__name__)
def test_as_dataclass_would_have_generated(obj: object) -> None:
    twin = _twin(obj)
    assert repr(obj) == repr(twin)
    copy = dataclasses.replace(obj)  # type: ignore[type-var]
    assert copy == obj and hash(copy) == hash(obj) and copy is not obj
    assert (obj == twin) is False  # another class: never equal, as with dataclass


def test_repr_eq_and_hash_as_dataclass_generates_them() -> None:
    job = messages.Job(cid="c1", uid="u1", oob=2, timeout=1.5)
    assert repr(job) == ("Job(reply=None, cid='c1', uid='u1', oob=2, pin=None, "
                         "timeout=1.5, priority=0)")
    same = messages.Job(cid="c1", uid="u1", oob=2, timeout=1.5)
    assert job == same and hash(job) == hash(same)
    assert job != messages.Job(cid="c1", uid="u2", oob=2, timeout=1.5)
    # another class with the same fields is never equal (as dataclass: NotImplemented)
    assert messages.Setup(cid="c1") != hostmsg.Fork(count=1)
    assert (job == object()) is False
    nan = float("nan")  # a value is equal to itself, as in the tuples dataclass compares
    assert messages.Done(uid="u", status=5, start_time=nan) == \
        messages.Done(uid="u", status=5, start_time=nan)


def test_the_other_users_of_plain() -> None:
    users = set(_all_records())
    for cls in (lifecycle.Send, lifecycle.SendCancel, lifecycle.Deliver,
                lifecycle.Resubmit, lifecycle.End, nodesetup.NodeChanged, ClusterStats,
                messages.Job, hostmsg.Fork, discoverymsg.Discover):
        assert cls in users, cls
    end = lifecycle.End(uid="u", cid="c", status=5, reason="r")
    assert repr(end) == "End(uid='u', cid='c', status=5, reason='r')"
    assert end == lifecycle.End(uid="u", cid="c", status=5, reason="r")
    assert {end, lifecycle.End(uid="u", cid="c", status=5, reason="r")} == {end}
    assert [lifecycle.Deliver(uid="u")] != [lifecycle.Deliver(uid="v")]


@pytest.mark.parametrize("cls", _all_records(), ids=lambda c: c.__qualname__)
def test_every_record_uses_the_shared_methods(cls: type) -> None:
    """No record class generates its own (an exec each at import)."""
    assert dataclasses.is_dataclass(cls) or cls is Plain
    for name in ("__repr__", "__eq__", "__hash__"):
        assert name not in vars(cls) or cls.__name__ == "Plain", (cls, name)
