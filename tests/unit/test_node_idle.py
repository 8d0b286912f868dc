"""Which idle job process the daemon's next job goes to (node/jobs.py ``_take_idle``):
the last one idle, of those without a lane if any, since a program's job may be on
its way on a lane, and its process should be free to take it."""

from __future__ import annotations

import pytest

from dispy.node.computation import JobLink
from dispy.node.jobs import _take_idle

pytestmark = pytest.mark.timeout(30)


def links(*lane: bool) -> list[JobLink]:
    out = []
    for pid, has in enumerate(lane, 1):
        link = JobLink(pid, None)  # type: ignore[arg-type]  # (no connection needed)
        link.lane = has
        out.append(link)
    return out


@pytest.mark.parametrize("lanes, taken, left", [
    ((False, False), 2, [1]),         # the last idle, as before
    ((False, True), 1, [2]),          # the one without a lane
    ((True, False, True), 2, [1, 3]),
    ((True, True), 2, [1]),           # all have one: the last
    ((True,), 1, []),
])
def test_the_last_idle_without_a_lane_goes_first(lanes, taken, left):
    idle = links(*lanes)
    assert _take_idle(idle).pid == taken
    assert [link.pid for link in idle] == left
