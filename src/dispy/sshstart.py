"""Start and stop dispynode on other machines over SSH (``dispy ssh``, ``dispy.SSHNodes``).

As Dask's ``SSHCluster`` does, with the system ``ssh`` (its config, keys and agent
apply): each host runs ``PYTHON -m dispy.dispynode --daemon OPTIONS`` detached from the
session, its PID and log in ``~/.dispy/`` (private), and the start waits until every
node answers a discovery request, so a program started next finds them all.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import config
from .wire import discovery, netif
from .wire.discoverymsg import DiscoveryMessage, NodeAnnouncement

#: seconds a started dispynode is watched before ssh returns (one failing at once is
#: reported with its log, not after the whole --timeout)
SETTLE = 2.0


@dataclass
class SSHNode:
    """One host: what happened to its dispynode (``error`` None when all went well)."""

    host: str
    node_port: int
    pid: int | None = None
    address: str | None = None
    name: str | None = None
    cpus: int | None = None
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"{self.host}: {self.error}"
        return (f"{self.host}: dispynode {self.name!r} (pid {self.pid}) serves {self.cpus}"
                f" CPUs at {netif.host_port(self.address or self.host, self.node_port)}")


def node_port_of(node_args: Sequence[str]) -> int:
    """The port a dispynode started with ``node_args`` serves on (its ``-p``)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-p", "--node_port", type=int, default=None)
    p.add_argument("--dispy_port", type=int, default=None)
    a, _ = p.parse_known_args(list(node_args))
    if a.node_port:
        return int(a.node_port)
    return a.dispy_port + 1 if a.dispy_port else config.NodePort


def _files(node_port: int) -> tuple[str, str]:
    return (f"$HOME/.dispy/ssh-dispynode-{node_port}.pid",
            f"$HOME/.dispy/ssh-dispynode-{node_port}.log")


def start_command(python: str, node_args: Sequence[str], node_port: int) -> str:
    """The remote shell command that starts a dispynode detached and prints its PID.

    Every user-given word is quoted: nothing in an option value reaches the shell."""
    pid, logf = _files(node_port)
    node = " ".join(shlex.quote(w) for w in [python, "-m", "dispy.dispynode", "--daemon",
                                              *node_args])
    return (f"umask 077 && cd \"$HOME\" && mkdir -p .dispy && "
            f"if [ -f \"{pid}\" ] && kill -0 \"$(cat \"{pid}\")\" 2>/dev/null; then "
            f"echo \"already running: $(cat \"{pid}\")\"; exit 3; fi; "
            f"setsid {node} </dev/null >\"{logf}\" 2>&1 & "
            f"P=$!; echo $P >\"{pid}\"; i=0; "
            # a node that cannot start (bad option, port in use) exits within a second
            f"while kill -0 $P 2>/dev/null && [ $i -lt {int(SETTLE * 10)} ]; do "
            f"sleep 0.1; i=$((i+1)); done; "
            f"if kill -0 $P 2>/dev/null; then echo \"started $P\"; else rm -f \"{pid}\"; "
            f"echo \"dispynode exited at once:\"; tail -n 5 \"{logf}\"; exit 4; fi")


def stop_command(node_port: int, wait: float = 10.0) -> str:
    """The remote shell command that stops the dispynode started by ``start_command``:
    SIGTERM, then SIGKILL after ``wait`` seconds; a PID that is no dispynode any more
    (reused) is left alone."""
    pid, _ = _files(node_port)
    tries = max(1, int(wait * 10))
    return (f"[ -f \"{pid}\" ] || {{ echo 'not running (no pid file)'; exit 0; }}; "
            f"P=$(cat \"{pid}\"); "
            f"if ! tr '\\0' ' ' </proc/$P/cmdline 2>/dev/null | grep -q dispy.dispynode; "
            f"then rm -f \"{pid}\"; echo 'not running'; exit 0; fi; "
            f"kill -TERM $P; i=0; while kill -0 $P 2>/dev/null && [ $i -lt {tries} ]; do "
            f"sleep 0.1; i=$((i+1)); done; "
            f"if kill -0 $P 2>/dev/null; then kill -KILL $P; echo \"killed $P\"; "
            f"else echo \"stopped $P\"; fi; rm -f \"{pid}\"")


def log_command(node_port: int) -> str:
    return f"tail -n 20 \"{_files(node_port)[1]}\" 2>/dev/null"


def ssh_argv(host: str, remote: str, options: Sequence[str] = (), user: str | None = None,
             identity: str | None = None) -> list[str]:
    """``ssh`` running ``remote`` on ``host``; never asks for a password."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    for opt in options:
        argv += ["-o", opt]
    if identity:
        argv += ["-i", identity]
    if user:
        argv += ["-l", user]
    return [*argv, "--", host, remote]


def _host_only(host: str) -> str:
    return host.rsplit("@", 1)[-1]


@dataclass
class SSHNodes:
    """dispynodes on ``hosts``, started over SSH; a context manager (start, then stop).

    ``node_args``: dispynode's options (``-s SECRET``, ``-c 4``, ``-p PORT``...);
    ``ssh_options``: ``-o`` options for ssh (``"Port=2222"``); ``python``: the remote
    interpreter that has dispy installed."""

    hosts: Sequence[str]
    node_args: Sequence[str] = ()
    ssh_options: Sequence[str] = ()
    user: str | None = None
    identity: str | None = None
    python: str = "python3"
    timeout: float = 60.0
    nodes: list[SSHNode] = field(default_factory=list)

    @property
    def node_port(self) -> int:
        return node_port_of(self.node_args)

    def _ssh(self, host: str, remote: str) -> subprocess.CompletedProcess[str]:
        argv = ssh_argv(host, remote, self.ssh_options, self.user, self.identity)
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            return subprocess.CompletedProcess(argv, 127, "", "the ssh command is not installed")
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"ssh took over {self.timeout} s")

    def start(self) -> list[SSHNode]:
        """Start every node and wait (up to ``timeout``) until each answers; the result
        per host (``error`` says what went wrong, with the end of the node's log)."""
        port = self.node_port
        self.nodes = [SSHNode(h, port) for h in self.hosts]
        remote = start_command(self.python, self.node_args, port)
        with ThreadPoolExecutor(max_workers=min(32, len(self.nodes) or 1)) as pool:
            runs = list(pool.map(lambda n: self._ssh(n.host, remote), self.nodes))
        for node, run in zip(self.nodes, runs, strict=True):
            words = run.stdout.split()
            if run.returncode == 0 and len(words) == 2 and words[0] == "started":
                node.pid = int(words[1])
            elif run.returncode == 3:
                node.error = f"a dispynode started by dispy ssh runs there: {run.stdout.strip()}"
            elif run.returncode == 4:
                node.error = run.stdout.strip()
            else:
                node.error = f"ssh failed ({run.returncode}): {_last_line(run.stderr)}"
        waiting = [n for n in self.nodes if n.error is None]
        asyncio.run(_wait_answers(waiting, self.timeout))
        for node in waiting:
            if node.address is None and node.error is None:
                log = self._ssh(node.host, log_command(port)).stdout.strip()
                node.error = (f"started (pid {node.pid}) but did not answer within"
                              f" {self.timeout} s; its log:\n{log or '(empty)'}")
        return self.nodes

    def stop(self) -> list[tuple[str, str]]:
        """Stop the nodes started on ``hosts``; (host, what happened) per host."""
        remote = stop_command(self.node_port)
        with ThreadPoolExecutor(max_workers=min(32, len(self.hosts) or 1)) as pool:
            runs = list(pool.map(lambda h: self._ssh(h, remote), self.hosts))
        return [(h, r.stdout.strip() if r.returncode == 0 else
                 f"ssh failed ({r.returncode}): {_last_line(r.stderr)}")
                for h, r in zip(self.hosts, runs, strict=True)]

    def __enter__(self) -> SSHNodes:
        failed = [n for n in self.start() if n.error]
        if failed:
            self.stop()
            raise RuntimeError("; ".join(n.describe() for n in failed))
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


async def _wait_answers(nodes: list[SSHNode], timeout: float) -> None:
    """Ask each node (a discovery datagram every half second) until all answered."""
    targets: dict[str, SSHNode] = {}
    for node in nodes:
        try:
            targets[netif.resolve(_host_only(node.host))] = node
        except OSError as exc:
            node.error = f"started (pid {node.pid}), but {node.host} does not resolve here: {exc}"
    if not targets:
        return

    def heard(msg: DiscoveryMessage, addr: tuple) -> None:
        found = discovery.announced_node(msg, addr)
        if found is None or not isinstance(msg, NodeAnnouncement):
            return
        node = targets.get(netif.normalize(addr[0])) or targets.get(found[0])
        if node is None or found[1] != node.node_port:
            return
        node.address, node.name, node.cpus = found[0], str(msg.name), msg.cpus

    ifs = netif.interfaces()
    proto = await discovery.open_endpoint(0, False, discovery.records(heard, "dispy ssh"),
                                          "dispy ssh", ifs)
    try:
        request = discovery.discover(proto.local_port(), "dispy-ssh")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = [(ip, n) for ip, n in targets.items() if n.address is None]
            if not left:
                return
            for ip, n in left:
                proto.send(request, (ip, n.node_port))
            await asyncio.sleep(0.5)
    finally:
        proto.close()
