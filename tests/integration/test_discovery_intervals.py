"""ping_interval: a node that starts after the program (or dispyscheduler) looked for
nodes is found by the repeated discovery, and used.

How the tests make re-asking the only way to find the late node:

- the nodes are given by a pattern (``'127.0.0.*'``), which is asked by broadcast: a
  node named by its address would be asked again every 5 s anyway, with or without
  ``ping_interval`` (README, ``wait_nodes``);
- the late node announces itself at start to a UDP port nobody listens on (its
  ``--scheduler_port``), and the client listens on none (``port=0``: "announcements are
  then not heard"), the scheduler on a port of its own (``-p``); so its announcement is
  not heard;
- no job is submitted until the node is set up (``wait_nodes``): while jobs wait with no
  usable node, a client asks again every 5 s even without ``ping_interval``.

Without ``ping_interval`` the only broadcast is the one made when the cluster starts,
before the node exists, and ``wait_nodes`` would time out (not asserted here: a negative
would only cost a long wait).
"""

from __future__ import annotations

import pytest
from conftest import free_port

import dispy

pytestmark = pytest.mark.timeout(90)


def where(x):
    return dispy_node_name, x  # noqa: F821 (a dispy builtin on the node)


def test_cluster_ping_interval_finds_a_node_started_later(node_factory):
    """JobCluster(..., ping_interval=2) broadcasts again every 2 s: a node started after
    the cluster is found, set up and runs a job."""
    port = free_port()
    with dispy.JobCluster(where, nodes=["127.0.0.*"], node_port=port, port=0,
                          ping_interval=2) as cluster:
        assert cluster.status().nodes == []
        node_factory("-c", "1", "--name", "late-node", "--scheduler_port", str(free_port()),
                     port=port)
        assert cluster.wait_nodes(1, timeout=30) == 1
        job = cluster.submit(7)
        assert job() == ("late-node", 7), job.exception
        assert job.ip_addr == "127.0.0.1"


def test_scheduler_ping_interval_finds_a_node_started_later(scheduler_factory, node_factory):
    """dispyscheduler --ping_interval 1 broadcasts again every second: a node started
    after the scheduler, and after a SharedJobCluster opened, is found and runs the
    program's job."""
    port = free_port()
    sched = scheduler_factory("--ping_interval", "1", "--node_port", str(port))
    with dispy.SharedJobCluster(where, nodes=["127.0.0.*"], scheduler_node="127.0.0.1",
                                scheduler_port=sched.port) as cluster:
        assert cluster.status().nodes == []
        node = node_factory("-c", "1", "--name", "late-node",
                            "--scheduler_port", str(free_port()), port=port)
        assert cluster.wait_nodes(1, timeout=30) == 1
        job = cluster.submit(7)
        assert job() == ("late-node", 7), job.exception
        assert job.ip_addr == "127.0.0.1"
    comps = [ln for ln in node.output().splitlines() if "computation 'where'" in ln]
    assert comps and all("from dispyscheduler@" in ln for ln in comps), node.output()
