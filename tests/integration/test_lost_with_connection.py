"""A job whose frame was lost with a broken connection: after the client reconnects to
the same node, the node is asked which of the client's running jobs it knows; one it
does not know runs again (reentrant) or ends with the reason, never waits forever."""

from __future__ import annotations

import pytest
from relay import C2S, Link, Relay, Unit

import dispy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def node(node_factory):
    """--tcp_only: the relay is a proxy on this host, which the program must not pass by
    on the node's local path (wire/localpath.py)."""
    return node_factory("-c", "2", "--tcp_only")


def ident(x):
    return x


def _cut_at_first_job(relay: Relay) -> list[Link]:
    """Drop the first record that carries a job and cut that connection (the node never
    sees the job; the client reconnects)."""
    cut: list[Link] = []

    def hook(link: Link, unit: Unit) -> bytes:
        if not cut and unit.direction == C2S and unit.kind == "record" and "job" in unit.ops():
            cut.append(link)
            for writer in link.writers.values():
                writer.close()
            return b""
        return unit.raw

    relay.hook = hook
    return cut


def test_a_reentrant_job_lost_with_the_connection_runs_again(node):
    with Relay(node.port) as relay:
        cut = _cut_at_first_job(relay)
        cluster = dispy.JobCluster(ident, nodes=[("127.0.0.1", relay.port)], port=0,
                                   reentrant=True)
        try:
            job = cluster.submit(7)
            assert job(timeout=60) == 7
            assert job.status == dispy.DispyJob.Finished
            assert cut and len(relay.links) >= 2  # it did go over a second connection
        finally:
            cluster.close(timeout=10, terminate=True)


def test_a_job_lost_with_the_connection_ends_with_the_reason(node):
    with Relay(node.port) as relay:
        cut = _cut_at_first_job(relay)
        cluster = dispy.JobCluster(ident, nodes=[("127.0.0.1", relay.port)], port=0)
        try:
            job = cluster.submit(7)
            assert job(timeout=60) is None
            assert job.status == dispy.DispyJob.Cancelled
            assert "lost" in (job.exception or "") and cut
            assert cluster.submit(8)(timeout=60) == 8  # the node is still used
        finally:
            cluster.close(timeout=10, terminate=True)
