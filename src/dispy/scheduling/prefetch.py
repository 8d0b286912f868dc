"""How many jobs to send ahead to a node: pure, from the run times of its recent jobs.

Jobs shorter than ``PREFETCH_BELOW`` (moving average per node) are sent ahead: up to
``PREFETCH_PER_CPU`` jobs per CPU wait on the node, so its CPUs need not idle for a round
trip to the client between jobs (and jobs, results and journal commits come in
batches); shorter jobs get more, up to ``PREFETCH_MAX_PER_CPU``, as many as run in the
same time (tiny jobs need more in flight to cover a round trip: 4 -> 16 per CPU took
no-op jobs on a 2-CPU node from about 7 000 to 10 000 a second). Longer jobs are not
sent ahead: the round trip is then small, and a job waiting behind others on a busy
node could have run on another node that frees up first; the bound keeps that delay
under PREFETCH_PER_CPU x PREFETCH_BELOW (80 ms) whatever the jobs. Nor are jobs with big
(out-of-band) arguments or results: sending them ahead only piles megabytes up on
the node (fresh memory, page faults) while the transfers themselves keep it busy.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFETCH_BELOW = 0.02
PREFETCH_PER_CPU = 4
PREFETCH_MAX_PER_CPU = 16


@dataclass(slots=True)
class RunTimes:
    """Moving averages of one node's jobs."""

    #: seconds a job ran (None: no job ran yet)
    job_time: float | None = None
    #: share of results that carried big (out-of-band) buffers
    job_big: float = 0.0

    def ended(self, ran: float, big: bool, cpus: int) -> int:
        """A job ran ``ran`` seconds: the jobs to keep waiting on the node beyond its CPUs."""
        if ran > 0:  # a job cancelled before it started tells nothing of run times
            self.job_time = ran if self.job_time is None else 0.8 * self.job_time + 0.2 * ran
        avg = self.job_time if self.job_time is not None else PREFETCH_BELOW
        self.job_big = 0.8 * self.job_big + 0.2 * big
        if avg >= PREFETCH_BELOW or self.job_big >= 0.5:
            return 0
        return cpus * per_cpu(avg)

    def big_job(self) -> int:
        """A job with big arguments was submitted: nothing is sent ahead for now."""
        self.job_big = 1.0
        return 0


def per_cpu(avg: float) -> int:
    """Jobs sent ahead per CPU for jobs of ``avg`` seconds (under PREFETCH_BELOW): those
    that run in PREFETCH_PER_CPU x PREFETCH_BELOW, within the bounds."""
    fit = int(PREFETCH_PER_CPU * PREFETCH_BELOW / avg) if avg > 0 else PREFETCH_MAX_PER_CPU
    return min(PREFETCH_MAX_PER_CPU, max(PREFETCH_PER_CPU, fit))
