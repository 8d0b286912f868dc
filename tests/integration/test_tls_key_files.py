"""TLS with the private key in a file of its own (``--keyfile`` / ``keyfile=``, as
``openssl req -keyout KEY -out CERT`` writes them): dispynode with a JobCluster,
dispyscheduler on both legs with a SharedJobCluster, and dispyadmin. (The other TLS
tests use one file holding the certificate and its key.)"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
from test_shared import shared
from web.conftest import wait_until
from web.test_admin_pages import dispyadmin  # noqa: F401 (fixture: starts dispyadmin)

import dispy

pytestmark = pytest.mark.timeout(90)


def double(x):
    return 2 * x


def cert_and_key(tmp_path: Path, name: str) -> tuple[str, str]:
    """A self-signed certificate and its private key, in two files."""
    cert, key = tmp_path / f"{name}-cert.pem", tmp_path / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-keyout", str(key), "-nodes", "-out", str(cert), "-days", "2",
         "-subj", f"/CN=dispy-{name}"], check=True, capture_output=True, timeout=30)
    assert "PRIVATE KEY" not in cert.read_text()  # the key is only in its own file
    assert "PRIVATE KEY" in key.read_text()
    return str(cert), str(key)


def test_node_and_job_cluster_with_key_file(node_factory, tmp_path):
    """dispynode --certfile CERT --keyfile KEY serves a JobCluster given
    certfile=CERT, keyfile=KEY: the job runs and its result comes back."""
    cert, key = cert_and_key(tmp_path, "node")
    node = node_factory("-c", "1", "-s", "tls-secret", "--certfile", cert, "--keyfile", key)
    with dispy.JobCluster(double, nodes=[("127.0.0.1", node.port)], port=0,
                          secret="tls-secret", certfile=cert, keyfile=key) as cluster:
        job = cluster.submit(21)
        assert job() == 42, job.exception
        assert job.status == dispy.DispyJob.Finished and job.ip_addr == "127.0.0.1"


def test_scheduler_both_legs_with_key_files(scheduler_factory, node_factory, tmp_path):
    """dispyscheduler --node_certfile/--node_keyfile (the nodes' certificate) and
    --cluster_certfile/--cluster_keyfile (the programs'), each key in its own file: a
    SharedJobCluster with the cluster certificate and key gets its job's result from a
    TLS node, through the scheduler."""
    node_cert, node_key = cert_and_key(tmp_path, "node")
    cluster_cert, cluster_key = cert_and_key(tmp_path, "cluster")
    node = node_factory("-c", "2", "--certfile", node_cert, "--keyfile", node_key)
    sched = scheduler_factory("--node_certfile", node_cert, "--node_keyfile", node_key,
                              "--cluster_certfile", cluster_cert,
                              "--cluster_keyfile", cluster_key)
    with shared(sched, node, double, certfile=cluster_cert, keyfile=cluster_key) as cluster:
        job = cluster.submit(21)
        assert job() == 42, job.exception
        assert job.status == dispy.DispyJob.Finished and job.ip_addr == "127.0.0.1"
    comps = [ln for ln in node.output().splitlines() if "computation 'double'" in ln]
    assert comps and all("from dispyscheduler@" in ln for ln in comps), node.output()


def test_dispyadmin_with_key_file(dispyadmin, node_factory, tmp_path):  # noqa: F811
    """dispyadmin --certfile CERT --keyfile KEY administers a TLS node whose
    --admin_secret it knows: its state (the JSON behind its pages, served over https
    with the same certificate) shows the node's details."""
    cert, key = cert_and_key(tmp_path, "admin")
    node = node_factory("-c", "1", "--name", "tls-admin-node", "--admin_secret", "adm",
                        "--certfile", cert, "--keyfile", key)
    admin = dispyadmin("--node_port", str(node.port), "--secret", "adm", "--certfile", cert,
                       "--keyfile", key, "--poll_interval", "1")
    assert admin.url.startswith("https://"), admin.url
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = False  # the certificate names the cluster, not this host
    wanted = f"127.0.0.1:{node.port}"

    def details() -> dict | None:
        with urllib.request.urlopen(admin.url + "api/state", context=ctx, timeout=10) as r:
            state = json.load(r)
        return next((n for n in state["nodes"] if n["key"] == wanted and n["admin"]
                     and n["jobs_done"] is not None), None)

    view = wait_until(f"dispyadmin shows {wanted} with details", details)
    assert view["name"] == "tls-admin-node" and view["cpus"] == 1
    assert view["max_cpus"] >= 1 and view["jobs_done"] == 0 and view["error"] is None
    assert view["avail"] and view["avail"]["memory"] > 0, view
