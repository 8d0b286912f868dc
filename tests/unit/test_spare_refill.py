"""When the node starts its next spare computation host (node/computation.py SpareHost):
once a job ends, or after a bound, never while a new computation's first job waits for
the CPUs. The launcher is a stand-in here: what is tested is when it is called."""

from __future__ import annotations

import asyncio
import types

import pytest

from dispy.node import computation
from dispy.node.computation import SpareHost

pytestmark = pytest.mark.timeout(30)


def _spare() -> tuple[SpareHost, list[int]]:
    launched: list[int] = []

    async def launch():
        launched.append(1)
        return (types.SimpleNamespace(returncode=None), "sock")

    return SpareHost(launch=launch), launched


def test_a_job_ending_starts_the_planned_spare_soon_after(monkeypatch):
    monkeypatch.setattr(computation, "AFTER_JOB", 0.05)

    async def main():
        loop = asyncio.get_running_loop()
        spare, launched = _spare()
        spare.refill_soon(60)
        await asyncio.sleep(0)
        assert spare.task is None and launched == []
        ended = loop.time()
        spare.job_ended()
        assert spare.task is None  # not in the loop turn that delivers the result
        due = spare._due.when()
        await asyncio.sleep(0.02)
        spare.job_ended()  # more jobs ending do not put it off
        assert spare._due.when() == due
        while spare.task is None:
            await asyncio.sleep(0.005)
        assert loop.time() - ended < 0.5  # the 60 s bound did not apply
        await spare.task
        assert launched == [1]
        spare.job_ended()  # nothing planned any more: no second start
        await asyncio.sleep(0.1)
        assert launched == [1]

    asyncio.run(main())


def test_the_bound_starts_it_when_no_job_ends():
    async def main():
        spare, launched = _spare()
        spare.refill_soon(0.01)
        while spare.task is None:
            await asyncio.sleep(0.005)
        await spare.task
        assert launched == [1]

    asyncio.run(main())


def test_taking_cancels_the_plan_and_no_host_starts_after():
    async def main():
        spare, launched = _spare()
        spare.refill_soon(0.01)
        assert await spare.take() is None  # as the daemon does when it stops
        await asyncio.sleep(0.05)
        spare.job_ended()
        assert spare.task is None and launched == []

    asyncio.run(main())


def test_a_job_ending_with_nothing_planned_starts_nothing():
    async def main():
        spare, launched = _spare()
        spare.job_ended()
        assert spare.task is None
        spare.refill()
        spare.refill_soon(60)  # a spare is there: nothing to plan
        await spare.take()
        spare.job_ended()
        assert launched == [1]

    asyncio.run(main())


def test_none_starts_once_the_daemon_stops_accepting():
    async def main():
        accepting = [True]
        launched: list[int] = []

        async def launch():
            launched.append(1)
            return (types.SimpleNamespace(returncode=None), "sock")

        spare = SpareHost(lambda: accepting[0], launch)
        spare.refill_soon(0.01)
        accepting[0] = False  # dispynode was asked to stop: a job ending, or the bound,
        spare.job_ended()  # starts nothing
        await asyncio.sleep(0.05)
        spare.refill()
        spare.refill_soon(0.01)
        await asyncio.sleep(0.05)
        assert spare.task is None and launched == []

    asyncio.run(main())


# ---- the daemon's wiring ----------------------------------------------------------------


class _Spare:
    def __init__(self) -> None:
        self.ended = 0

    def job_ended(self) -> None:
        self.ended += 1


def test_every_job_end_on_the_node_tells_the_spare(tmp_path):
    """node/jobs.py: a job that ends (here one ended without a result of its own, as a
    cancel or a lost process ends it) is what starts the planned spare host."""
    from dispy.node.computation import Computation
    from dispy.node.jobs import JobRunner
    from dispy.node.service import OPEN
    from dispy.node.session import Session
    from dispy.wire import messages
    from dispy.wire.status import TERMINATED

    reported: list[str] = []
    host = types.SimpleNamespace(
        spare=_Spare(), metrics=None, accepting=True, sessions={}, service_state=OPEN,
        report_soon=lambda session, uid: reported.append(uid), maybe_finish=lambda: None)
    runner = JobRunner(host)  # type: ignore[arg-type]
    session = Session("sid", "client", "program", "127.0.0.1")
    comp = Computation("c1", messages.Compute(cid="c1", name="f"), b"", str(tmp_path),
                       session)
    session.computations["c1"] = comp
    runner._end_job(comp, "u1", TERMINATED, "its process was lost")
    assert reported == ["u1"] and host.spare.ended == 1


def test_the_daemons_spare_starts_only_while_it_accepts(tmp_path):
    """node/daemon.py: no spare host starts once the node stops taking computations."""
    from dispy.node import options
    from dispy.node.daemon import NodeDaemon

    daemon = NodeDaemon(options.parse(["-i", "127.0.0.1", "--dest_path_prefix",
                                       str(tmp_path)]))
    assert daemon.spare.allowed()
    daemon.accepting = False
    assert not daemon.spare.allowed()
