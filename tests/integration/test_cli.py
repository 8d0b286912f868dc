"""The ``dispy`` command against real nodes: ``dispy run`` (4.15's dispy_cmd) and
``dispy status``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = pytest.mark.timeout(90)

PROGRAM = """#!/bin/sh
echo "hello $1 $2"
echo "note $1" >&2
[ "$1" = "fail" ] && exit 3
exit 0
"""


def dispy(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dispy", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=60)


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "prog.sh"
    path.write_text(PROGRAM)
    path.chmod(0o755)
    return path


def test_run_once_per_args_and_exit_status(node, program, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("x")
    out = dispy("run", "./prog.sh", "-a", "one two", "-a", "fail x", "-f", "data.txt",
                "-n", "127.0.0.1", "--node_port", str(node.port), cwd=tmp_path)
    assert out.returncode == 1, out.stderr  # one run exited 3
    assert "=== one two: Finished on 127.0.0.1" in out.stdout
    assert "exit status 0" in out.stdout and "hello one two" in out.stdout
    assert "note one" in out.stdout  # its stderr
    assert "=== fail x: Finished on 127.0.0.1" in out.stdout
    assert "exit status 3" in out.stdout
    assert "Total job time" in out.stdout  # print_status at the end
    ok = dispy("run", "./prog.sh", "-a", "fine", "-n", "127.0.0.1", "--node_port",
               str(node.port), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # 4.15's name for the same command
    compat = subprocess.run([str(Path(sys.executable).parent / "dispy_cmd.py"), "./prog.sh",
                             "-a", "old", "-n", "127.0.0.1", "--node_port", str(node.port)],
                            cwd=tmp_path, text=True, capture_output=True, timeout=60)
    assert compat.returncode == 0 and "hello old" in compat.stdout, compat.stderr


@pytest.mark.parametrize("args, message", [
    (["./missing.sh"], "./missing.sh: no such file"),
    (["./prog.sh", "-f", "nope.txt"], "-f nope.txt: no such file"),
    (["./prog.sh", "-a", "'unclosed"], "No closing quotation"),
])
def test_run_bad_use_is_a_clear_error(program, tmp_path, args, message):
    out = dispy("run", *args, "-n", "127.0.0.1", cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_status_lists_the_nodes_that_answer(node_factory, tmp_path):
    node = node_factory("-c", "2", "--name", "alpha")
    out = dispy("status", "-n", "127.0.0.1", "--node_port", str(node.port), "--timeout",
                "1", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    [entry] = json.loads(out.stdout)
    assert (entry["name"], entry["ip_addr"], entry["port"]) == ("alpha", "127.0.0.1",
                                                                 node.port)
    assert entry["cpus"] == 2 and entry["busy"] == 0 and entry["busy_with"] is None
    assert set(entry["avail_info"]) >= {"cpu", "memory", "disk"}
    table = dispy("status", "-n", "127.0.0.1", "--node_port", str(node.port), "--timeout",
                  "1", cwd=tmp_path)
    assert "alpha" in table.stdout and f"127.0.0.1:{node.port}" in table.stdout


def test_status_with_no_node_says_so(tmp_path):
    out = dispy("status", "-n", "127.0.0.1", "--node_port", str(free_port()), "--timeout",
                "0.5", cwd=tmp_path)
    assert out.returncode == 1 and "no node answered" in out.stderr
