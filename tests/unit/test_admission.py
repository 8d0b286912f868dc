"""Admission of unauthenticated connections: caps per source, in all, and a descriptor
reserve (the pure counting; the daemons' use of it is in test_security_net)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from dispy.wire import admission
from dispy.wire.admission import Admission, free_descriptors

pytestmark = pytest.mark.timeout(10)


class Gate(Admission):
    """The same counting, called synchronously (no descriptor shortage: no waiting)."""

    def admit(self, peer_ip: str) -> bool:  # type: ignore[override]
        return asyncio.run(super().admit(peer_ip))


def gate(free: list[int | None] | None = None, **kw) -> Gate:
    free = free if free is not None else [None]
    return Gate("test", free_fds=lambda: free[0], logger=logging.getLogger("t"), **kw)


def test_per_source_cap_does_not_touch_other_sources():
    g = gate(per_source=3, total=100)
    assert all(g.admit("10.0.0.9") for _ in range(3))
    assert not g.admit("10.0.0.9")
    assert g.admit("10.0.0.2")
    g.release("10.0.0.9")
    assert g.admit("10.0.0.9")
    assert g.refused == 1


def test_total_cap():
    g = gate(per_source=10, total=4)
    assert [g.admit(f"10.0.0.{i}") for i in range(6)] == [True] * 4 + [False] * 2
    g.release("10.0.0.0")
    assert g.admit("10.0.0.7")
    assert g.in_handshake == 4


def test_descriptor_reserve(monkeypatch):
    monkeypatch.setattr(admission, "SETTLE_DELAY", 0.001)
    free: list[int | None] = [100]
    g = gate(free, reserve=20)
    assert g.admit("10.0.0.1")
    free[0] = 19
    assert not g.admit("10.0.0.2")
    assert g.in_handshake == 1 and "10.0.0.2" not in g.pending
    free[0] = None  # unknown: not checked
    assert g.admit("10.0.0.2")


def test_a_moment_short_of_descriptors_is_waited_out(monkeypatch):
    """Refused connections of an accept burst close an iteration later: look again."""
    monkeypatch.setattr(admission, "SETTLE_DELAY", 0.001)
    looks = iter([3, 3, 50])
    g = gate(reserve=20)
    g.free_fds = lambda: next(looks)
    assert g.admit("10.0.0.1")


def test_release_is_safe_for_unknown_peers_and_counts_never_go_negative():
    g = gate(per_source=1, total=1)
    g.release("10.0.0.1")
    assert g.in_handshake == 0 and g.pending == {}
    assert g.admit("10.0.0.1")
    g.release("10.0.0.1")
    g.release("10.0.0.1")
    assert g.in_handshake == 0 and g.pending == {}
    assert g.admit("10.0.0.3")


def test_refusal_is_logged_with_the_reason(caplog):
    g = gate(per_source=1, total=10)
    g.admit("10.0.0.1")
    with caplog.at_level(logging.WARNING, logger="t"):
        g.admit("10.0.0.1")
    assert "refused connection from 10.0.0.1" in caplog.text
    assert "already in their handshake" in caplog.text


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        Admission("x", per_source=0)


def test_free_descriptors_counts_this_process():
    import os

    before = free_descriptors()
    if before is None:
        pytest.skip("descriptor count not available here")
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(5)]
    try:
        assert free_descriptors() == before - 5
    finally:
        for fd in fds:
            os.close(fd)
