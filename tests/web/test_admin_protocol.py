"""The admin role on the wire: its own secret, its own operations, nothing else."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

import dispy
from dispy import NodeAllocate
from dispy.web.admin_link import AdminError, AdminLink

pytestmark = pytest.mark.timeout(60)


def compute(n):
    return n + 1


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def secured(node_factory):
    """A node with a client secret and a different admin secret."""
    return node_factory("-c", "2", "-s", "client-secret", "--admin_secret", "admin-secret")


def test_admin_secret_administers(secured):
    async def go():
        link = AdminLink("127.0.0.1", secured.port, "admin-secret")
        try:
            info = await link.info()
            assert info["cpus"] == 2 and info["serve"] == -1 and info["jobs_done"] == 0
            assert await link.set_cpus(1) == 1
            assert (await link.info())["cpus"] == 1
            assert await link.set_cpus("all") >= 1
        finally:
            link.close()

    run(go())


def test_client_secret_cannot_administer(secured):
    async def go():
        with pytest.raises(AdminError, match="admin secret does not match"):
            await AdminLink("127.0.0.1", secured.port, "client-secret").info()

    run(go())
    secured.wait_for("refused connection")


def test_node_without_admin_secret_refuses_admin(node_factory):
    node = node_factory("-c", "1")  # no secrets at all: clients may, dispyadmin may not

    async def go():
        with pytest.raises(AdminError, match="does not serve peers in role 'admin'"):
            await AdminLink("127.0.0.1", node.port, "").info()

    run(go())


def test_admin_secret_cannot_run_code(secured):
    """Neither as a client (the admin secret is not the client secret) nor over the admin
    link (which has no operation that takes code or jobs)."""
    cluster = dispy.JobCluster(compute, nodes=[NodeAllocate("127.0.0.1", secured.port)],
                               port=0, secret="admin-secret")
    try:
        job = cluster.submit(1)
        assert not cluster.wait(timeout=3)
        assert job.status == dispy.DispyJob.Created
    finally:
        cluster.close(timeout=0, terminate=True)
    secured.wait_for("secret mismatch")

    async def go():
        link = AdminLink("127.0.0.1", secured.port, "admin-secret")
        try:
            for op in ("compute", "job", "setup", "file"):
                with pytest.raises(AdminError, match="not an admin operation"):
                    await link.request(op, cid="x", uid="1")
            assert (await link.info())["jobs_done"] == 0
        finally:
            link.close()

    run(go())
    # and the right client secret still runs code
    with dispy.JobCluster(compute, nodes=[NodeAllocate("127.0.0.1", secured.port)], port=0,
                          secret="client-secret") as cluster:
        assert cluster.submit(1)() == 2


def test_service_times_one_at_a_time(secured):
    """Start alone is kept; with a stop it becomes the window (stop now: not accepting);
    clearing the start puts the node back in service."""

    async def go():
        link = AdminLink("127.0.0.1", secured.port, "admin-secret")
        try:
            hour = (time.localtime().tm_hour + 22) % 24  # two hours ago
            kept = await link.set_service_time("start", f"{hour:02d}:00")
            assert kept["pending"] is True
            done = await link.set_service_time("stop", "now")
            assert done["service_state"] == "stopped"
            info = await link.info()
            assert info["usable_cpus"] == 0 and info["service"]["start"] == f"{hour:02d}:00"
            with pytest.raises(AdminError, match="HH:MM"):
                await link.set_service_time("end", "25:99")
            await link.set_service_time("start", None)
            await link.set_service_time("stop", None)
            assert (await link.info())["service_state"] == "open"
        finally:
            link.close()

    run(go())


def test_serve_zero_stops_an_idle_node(secured):
    async def go():
        link = AdminLink("127.0.0.1", secured.port, "admin-secret")
        try:
            with pytest.raises(AdminError, match="-1"):
                await link.set_serve(-5)
            await link.set_serve(0)
        finally:
            link.close()

    run(go())
    secured.proc.wait(15)
    assert "no more clients to serve" in secured.output()


def test_dispynode_admin_secret_in_saved_config(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dispy.dispynode", "--admin_secret", "x",
                          "--save_config"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert 'admin_secret = "x"' in out.stdout
    out = subprocess.run([sys.executable, "-m", "dispy.dispynode", "--save_config"],
                         capture_output=True, text=True, timeout=30)
    assert "admin_secret" not in out.stdout
