"""4.15 options that programs and scripts pass: accepted with the original's meaning
(--init, --admin_secret, the scheduler's policies, --cleanup_nodes) or a clear note."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import free_port

import dispy
from dispy.node import options as node_options
from dispy.scheduler import options as sched_options

pytestmark = pytest.mark.timeout(90)


def test_node_accepts_the_415_options(tmp_path):
    init = tmp_path / "init.py"
    init.write_text("def init():\n    return 0\n")
    opts = node_options.parse(["--admin_secret", "adm", "--unsafe_setup",
                               "--ipv4_udp_multicast", "--init", str(init)])
    assert opts.admin_secret == "adm" and opts.init_file == str(init)
    assert any("--unsafe_setup" in n for n in opts.notes)
    assert opts.ipv4_udp_multicast  # used now (multicast announcements), no longer a note


def test_node_init_file_must_exist(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        node_options.parse(["--init", str(tmp_path / "missing.py")])
    assert exc.value.code == 2 and "no such file" in capsys.readouterr().err


def test_admin_secret_is_saved_only_when_given(tmp_path):
    path = tmp_path / "n.cfg"
    with pytest.raises(SystemExit):
        node_options.parse(["--save_config", str(path)])
    assert "admin_secret" not in path.read_text()
    with pytest.raises(SystemExit):
        node_options.parse(["--admin_secret", "adm", "--save_config", str(path)])
    assert node_options.parse(["--config", str(path)]).admin_secret == "adm"


@pytest.mark.parametrize("argv, policy", [
    ([], "fifo"), (["--fair_cluster_scheduler"], "fair"),
    (["--early_cluster_scheduler"], "early"), (["--policy", "fair"], "fair"),
])
def test_scheduler_policy_aliases(argv, policy):
    assert sched_options.parse(argv).policy == policy


def test_scheduler_415_switches():
    opts = sched_options.parse(["--cooperative", "--cleanup_nodes", "--httpd"])
    assert opts.cooperative and opts.cleanup_nodes and opts.httpd


def test_scheduler_conflicting_policies_are_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        sched_options.parse(["--fair_cluster_scheduler", "--early_cluster_scheduler"])
    assert exc.value.code == 2 and "choose one policy" in capsys.readouterr().err


def test_scheduler_httpd_port_in_use_is_a_clear_error(tmp_path):
    """--httpd serves the monitor page (tests/web/test_scheduler_httpd.py); a port that
    is taken is a one-line reason, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = subprocess.run([sys.executable, "-m", "dispy.dispyscheduler", "-i", "127.0.0.1",
                              "--scheduler_port", str(free_port()), "-p", str(free_port()),
                              "--httpd", "--httpd_port", str(taken.getsockname()[1]),
                              "--daemon", "--dest_path_prefix", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
    assert run.returncode != 0, run.stderr
    assert "--httpd cannot serve on port" in run.stderr and "Traceback" not in run.stderr


def use_init_global(x):
    return greeting, x  # noqa: F821 (made global by the node's --init file)


def test_init_file_globals_reach_computations_and_programs(node_factory, tmp_path):
    init = tmp_path / "nodeinit.py"
    init.write_text(textwrap.dedent("""
        def init():
            global greeting, answer
            greeting = "hello from init"
            answer = 42
            return 0

        def close():
            open(os.environ["DISPY_TEST_CLOSED"], "w").close()

        import os
    """))
    closed = tmp_path / "closed"
    os.environ["DISPY_TEST_CLOSED"] = str(closed)  # inherited by the node
    try:
        node = node_factory("-c", "1", "--init", str(init), "--unsafe_setup")
    finally:
        del os.environ["DISPY_TEST_CLOSED"]
    assert "--unsafe_setup" in node.output()
    with dispy.JobCluster(use_init_global, nodes=[("127.0.0.1", node.port)], port=0) as c:
        assert c.submit(1)() == ("hello from init", 1)
    script = tmp_path / "show_env.py"
    script.write_text("import os\nprint(os.environ['greeting'], os.environ['answer'])\n")
    with dispy.JobCluster(str(script), nodes=[("127.0.0.1", node.port)], port=0) as c:
        job = c.submit()
        assert job() == 0, job.exception
        assert job.stdout == b"hello from init 42\n"
    assert closed.exists()


def test_init_returning_nonzero_fails_setup(node_factory, tmp_path, caplog):
    init = tmp_path / "badinit.py"
    init.write_text("def init():\n    return 1\n")
    node = node_factory("-c", "1", "--init", str(init))
    cluster = dispy.JobCluster(use_init_global, nodes=[("127.0.0.1", node.port)], port=0)
    try:
        job = cluster.submit(1)
        assert cluster.wait(timeout=3) is False
        assert "init() returned 1" in caplog.text
    finally:
        cluster.close(timeout=0, terminate=True)
    assert job.status == dispy.DispyJob.Cancelled


def test_program_run_as_script_accepts_options():
    """The entry points accept the 4.15 switches (help lists them)."""
    out = subprocess.run([sys.executable, "-m", "dispy.dispynode", "--help"],
                         capture_output=True, text=True, timeout=30).stdout
    for opt in ("--admin_secret", "--init", "--unsafe_setup", "--ipv4_udp_multicast"):
        assert opt in out
    out = subprocess.run([sys.executable, "-m", "dispy.dispyscheduler", "--help"],
                         capture_output=True, text=True, timeout=30).stdout
    for opt in ("--fair_cluster_scheduler", "--early_cluster_scheduler", "--cooperative",
                "--cleanup_nodes", "--httpd"):
        assert opt in out
