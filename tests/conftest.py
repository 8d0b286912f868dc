"""Shared test fixtures: real dispynode processes on free loopback ports."""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: where pytest was started (the repository); recover files must not appear here
ROOT = os.getcwd()


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (nodes use both)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("", port))
            return port
        except OSError:
            continue


class NodeProcess:
    """A dispynode started by a test; its output goes to ``log``."""

    def __init__(self, port: int, prefix: Path, log: Path, proc: subprocess.Popen,
                 argv: list[str] | None = None) -> None:
        self.port = port
        self.prefix = prefix
        self.log = log
        self.proc = proc
        self.argv = argv or []

    def restart(self, ready: str | None = None) -> None:
        """Start it again with the same arguments (after ``stop``); output appends."""
        assert self.proc.poll() is not None, "stop it first"
        mark = len(self.output())
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.argv, stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        if ready:
            deadline = time.monotonic() + 15
            while ready not in self.output()[mark:]:
                assert self.proc.poll() is None and time.monotonic() < deadline, \
                    f"never logged {ready!r} after restart:\n{self.output()[mark:]}"
                time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"dispynode never logged {text!r}; output:\n{self.output()}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _spawn(tmp: Path, kind: str, port: int, argv: list[str], ready: str | None) -> NodeProcess:
    """Start ``python -m dispy.<kind>`` with its own directory and log under ``tmp``."""
    prefix = tmp / f"{kind.removeprefix('dispy')}-{port}"
    prefix.mkdir(parents=True, exist_ok=True)
    log = tmp / f"{kind.removeprefix('dispy')}-{port}.log"
    argv = [sys.executable, "-m", f"dispy.{kind}", "--dest_path_prefix", str(prefix),
            "--daemon", *argv]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    daemon = NodeProcess(port, prefix, log, proc, argv)
    if ready:
        daemon.wait_for(ready)
    return daemon


def start_node(tmp: Path, *args: str, port: int | None = None, wait: bool = True,
               ip: str = "127.0.0.1") -> NodeProcess:
    port = port or free_port()
    return _spawn(tmp, "dispynode", port, ["-i", ip, "-p", str(port), *args],
                  "serving" if wait else None)


def start_scheduler(tmp: Path, *args: str, wait: bool = True,
                    ip: str = "127.0.0.1") -> NodeProcess:
    """A dispyscheduler on free ports; ``.port`` is the port clients connect to."""
    port = free_port()
    argv = ["-i", ip, "--scheduler_port", str(port), "-p", str(free_port()), *args]
    return _spawn(tmp, "dispyscheduler", port, argv, "clients connect to" if wait else None)


def crash_program(tmp: Path, source: str, *args: str) -> None:
    """Run ``source`` as a program in ``tmp`` until it prints "all running", then kill it
    (and what it started) with SIGKILL: a program that crashed with jobs out."""
    script = tmp / "client.py"
    script.write_text(source)
    proc = subprocess.Popen([sys.executable, str(script), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=tmp,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "all running"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def wait_kept(node: NodeProcess, count: int) -> None:
    """Wait until the node logged that it kept ``count`` results for an absent client."""
    deadline = time.monotonic() + 15
    while node.output().count("kept on disk") < count:
        assert time.monotonic() < deadline, node.output()
        time.sleep(0.05)


def wait_started(job, timeout: float = 30.0) -> None:
    """Wait until a job said it started (it calls ``dispy_provisional_result``)."""
    deadline = time.monotonic() + timeout
    while job.status != 7:  # DispyJob.ProvisionalResult
        assert time.monotonic() < deadline, f"{job} never started"
        time.sleep(0.02)


def _factory(start: Any) -> Any:
    @pytest.fixture
    def factory(tmp_path: Path) -> Iterator:
        procs: list[NodeProcess] = []

        def make(*args: str, **kw) -> NodeProcess:
            proc = start(tmp_path, *args, **kw)
            procs.append(proc)
            return proc

        yield make
        for proc in procs:
            proc.stop()

    return factory


#: ``node_factory(*args)`` starts a dispynode; all are killed at teardown.
node_factory = _factory(start_node)
#: ``scheduler_factory(*args)`` starts a dispyscheduler; all are killed at teardown.
scheduler_factory = _factory(start_scheduler)


@pytest.fixture
def node(node_factory) -> NodeProcess:
    """One dispynode with 2 CPUs on 127.0.0.1."""
    return node_factory("-c", "2")


@pytest.fixture
def no_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The program opens no lanes (client/lanes.py): for tests of how dispynode sends
    jobs ahead to a busy job process, which a lane job would take off dispynode's way
    (and whose log lines they count). tests/integration/test_lanes.py tests the mix."""
    from dispy.client import lanes
    monkeypatch.setattr(lanes, "ENABLED", False)




def _locks_in(directory: str) -> set[str]:
    """Lab lock files: the only such files this process (not its children) creates."""
    return set(glob.glob(os.path.join(directory, "dispy-netlab-*.lock")))


def _live_lock(path: str) -> bool:
    """A lock file someone holds (a lab still running, e.g. in another test run)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


@pytest.fixture(scope="session", autouse=True)
def _leaves_nothing_behind() -> Iterator[None]:
    """Fail the run when it leaves files behind: anything the processes it starts put
    in their temp dir (dispynode-*, dispy-demo-*, ...: they run with TMPDIR pointing at
    a private directory, so other programs on the machine do not count), new
    dispy-netlab-*.lock files nobody holds in /tmp, or recover files (_dispy_*) here.
    (Children's leftovers are looked for in their private temp dir, not in /tmp, where
    other test runs on the same machine may leave theirs.)"""
    system_tmp = tempfile.gettempdir()  # this process keeps the system's
    private = tempfile.mkdtemp(prefix="dispy-tests-tmp-")
    old_tmpdir = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = private
    before = _locks_in(system_tmp)
    recover_before = set(glob.glob(os.path.join(ROOT, "_dispy_*")))
    try:
        yield
    finally:
        if old_tmpdir is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_tmpdir
        left = sorted(os.path.join(private, name) for name in os.listdir(private))
        left += sorted(p for p in _locks_in(system_tmp) - before if not _live_lock(p))
        left += sorted(set(glob.glob(os.path.join(ROOT, "_dispy_*"))) - {
            *recover_before})
        shutil.rmtree(private, ignore_errors=True)
        if left:
            pytest.fail("the test run left these behind:\n  " + "\n  ".join(left),
                        pytrace=False)


@pytest.fixture(scope="session")
def _short_tmp_base() -> Iterator[Path]:
    """Where tests' own directories go: a short path of this process's own.
    pytest's (/tmp/pytest-of-USER/pytest-N/[popen-gwK/]name0) grows with its run number,
    the user's name and a parallel worker's name; a node's job socket under a
    --dest_path_prefix there can outgrow a Unix socket path, which moves it to TMPDIR
    (a different code path, and a -9 kill leaves it there)."""
    base = Path(tempfile.mkdtemp(prefix="dispy-t-"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def tmp_path(_short_tmp_base: Path) -> Iterator[Path]:
    """A fresh directory per test (as pytest's), removed after it, also when it fails:
    daemons a test started are stopped by its other fixtures first."""
    path = Path(tempfile.mkdtemp(prefix="t", dir=_short_tmp_base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory (files sent by nodes land there)."""
    monkeypatch.chdir(tmp_path)
