"""dispy ssh's pure parts: ports, argv, and the remote shell commands (run here with sh,
with a stand-in for Python, so quoting is tested by a real shell)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispy import config
from dispy.cli.ssh import split_node_args
from dispy.sshstart import SSHNode, log_command, node_port_of, ssh_argv, start_command, stop_command

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("args, port", [
    ((), config.NodePort), (("-p", "6000"), 6000), (("--node_port", "6001"), 6001),
    (("--dispy_port", "9700"), 9701), (("-s", "x", "-c", "2"), config.NodePort)])
def test_node_port_of(args: tuple[str, ...], port: int) -> None:
    assert node_port_of(args) == port


def test_ssh_argv_never_prompts_and_ends_options() -> None:
    argv = ssh_argv("-oProxyCommand=evil", "true", ["Port=2222"], "me", "/k")
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    assert argv[argv.index("--") + 1] == "-oProxyCommand=evil"  # a host, not an option
    assert ["-i", "/k"] == argv[argv.index("-i"):argv.index("-i") + 2]


def test_split_node_args() -> None:
    assert split_node_args(["start", "h", "--", "-s", "x"]) == (["start", "h"], ["-s", "x"])
    assert split_node_args(["stop", "h"]) == (["stop", "h"], [])


def sh(cmd: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30,
                          env=env)


def test_hostile_option_values_reach_the_program_verbatim(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    hostile = f"x; touch {canary}; $(touch {canary}) `touch {canary}` '\"\\"
    res = sh(start_command("/bin/echo", ["--name", hostile], 7000), tmp_path)
    assert res.returncode == 4 and "exited at once" in res.stdout  # echo exits at once
    assert not canary.exists()
    log = (tmp_path / ".dispy" / "ssh-dispynode-7000.log").read_text()
    assert log.strip() == f"-m dispy.dispynode --daemon --name {hostile}"
    assert (tmp_path / ".dispy").stat().st_mode & 0o077 == 0


def test_start_stop_with_a_long_running_stand_in(tmp_path: Path) -> None:
    """A stand-in 'python' that runs like a node: start records its pid; stop refuses
    to kill a process that is not a dispynode, and stops one that is."""
    fake = tmp_path / "fakepy"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import time; time.sleep(60)' \"$@\"\n")
    fake.chmod(0o755)
    res = sh(start_command(str(fake), ["-p", "7001"], 7001), tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("started"), res
    pid = int(res.stdout.split()[1])
    again = sh(start_command(str(fake), ["-p", "7001"], 7001), tmp_path)
    assert again.returncode == 3, again
    stop = sh(stop_command(7001), tmp_path)
    assert "stopped" in stop.stdout, stop
    assert sh(log_command(7001), tmp_path).returncode == 0
    deadline = time.monotonic() + 10
    while "dispy.dispynode" in _cmdline(pid):
        assert time.monotonic() < deadline, "the stand-in survived stop"
        time.sleep(0.05)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_stop_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / ".dispy").mkdir()
        (tmp_path / ".dispy" / "ssh-dispynode-7002.pid").write_text(str(other.pid))
        res = sh(stop_command(7002), tmp_path)
        assert "not running" in res.stdout and other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_describe() -> None:
    ok = SSHNode("h1", 51348, pid=7, address="fd00::1", name="n", cpus=4)
    assert ok.describe() == "h1: dispynode 'n' (pid 7) serves 4 CPUs at [fd00::1]:51348"
    assert SSHNode("h2", 1, error="ssh failed").describe() == "h2: ssh failed"
