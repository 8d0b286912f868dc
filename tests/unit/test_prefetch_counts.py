"""How many jobs are sent ahead to a node (scheduling/prefetch.py): more for shorter
jobs, none for long or big ones, and a job never waits behind those sent ahead of it on
one CPU for longer than PREFETCH_PER_CPU x PREFETCH_BELOW."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispy.scheduling.prefetch import (
    PREFETCH_BELOW,
    PREFETCH_MAX_PER_CPU,
    PREFETCH_PER_CPU,
    RunTimes,
    per_cpu,
)

pytestmark = pytest.mark.timeout(30)


def _after(ran: float, cpus: int = 2, times: int = 30, big: bool = False) -> int:
    runs = RunTimes()
    for _ in range(times):
        ahead = runs.ended(ran, big, cpus)
    return ahead


def test_shorter_jobs_get_more_sent_ahead():
    assert _after(0.0001) == 2 * PREFETCH_MAX_PER_CPU
    assert _after(0.010) == 2 * 8
    assert _after(0.019) == 2 * PREFETCH_PER_CPU
    assert _after(0.030) == 0
    assert _after(0.0001, big=True) == 0


@given(st.floats(min_value=1e-9, max_value=PREFETCH_BELOW, exclude_max=True))
def test_what_waits_on_a_cpu_runs_within_the_bound(avg):
    n = per_cpu(avg)
    assert PREFETCH_PER_CPU <= n <= PREFETCH_MAX_PER_CPU
    assert n * avg <= PREFETCH_PER_CPU * PREFETCH_BELOW * (1 + 1e-9)
