"""Self-tests for the netlab: prove the virtual LAN behaves like a real one before dispy's
integration tests rely on it (connectivity, broadcast, cable cuts, leak-free cleanup)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from . import lab as lab_mod
from .lab import Host, Lab, netlab_available

pytestmark = pytest.mark.netlab

_reason = netlab_available()
if _reason:
    pytestmark = [pytest.mark.netlab, pytest.mark.skip(reason=_reason)]

PY = sys.executable
PING = next((p for p in ("/usr/bin/ping", "/bin/ping") if os.path.exists(p)), None)
PORT = 5151

SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"pong")
    c.close()
"""

CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
c.settimeout(2)
sys.exit(0 if c.recv(4) == b"pong" else 1)
"""

RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[1])))
s.settimeout(10)
print("ready", flush=True)
data, addr = s.recvfrom(100)
print(data.decode(), addr[0], flush=True)
"""

SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for _ in range(3):
    s.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.1)
"""


def start_server(host: Host) -> subprocess.Popen:
    proc = host.popen([PY, "-c", SERVER, host.ip, str(PORT)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def reachable(src: Host, dst: Host) -> bool:
    """ping if installed, else a TCP round trip to the server started on dst."""
    if PING:
        return src.run([PING, "-c1", "-W2", dst.ip], capture_output=True).returncode == 0
    return src.run([PY, "-c", CLIENT, dst.ip, str(PORT)], capture_output=True,
                   timeout=10).returncode == 0


def wait_until(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return False


def netns_names() -> set[str]:
    out = subprocess.run([lab_mod.IP, "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (an unreaped corpse holds no resources)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.timeout(60)
def test_hosts_reach_each_other() -> None:
    with Lab() as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        assert a.ip != b.ip and a.ip.startswith(str(lab.subnet.network_address)[:-1])
        start_server(a)
        start_server(b)
        assert reachable(a, b)
        assert reachable(b, a)
        out = a.run(["ip", "-4", "addr", "show", "eth0"], capture_output=True, text=True).stdout
        assert f"{a.ip}/24 brd {lab.broadcast}" in out


@pytest.mark.timeout(60)
def test_udp_broadcast_reaches_other_host() -> None:
    with Lab() as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        rx = b.popen([PY, "-c", RECEIVER, "9999"], stdout=subprocess.PIPE, text=True)
        assert rx.stdout is not None and rx.stdout.readline().strip() == "ready"
        a.run([PY, "-c", SENDER, lab.broadcast, "9999"], check=True, timeout=20)
        assert rx.stdout.readline().split() == ["hello", a.ip]
        assert rx.wait(timeout=10) == 0


@pytest.mark.timeout(60)
def test_link_down_and_up() -> None:
    with Lab() as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        server = start_server(b)
        assert reachable(a, b)
        a.link_down()
        assert not reachable(a, b)
        assert server.poll() is None  # processes keep running through a cable cut
        a.link_up()
        assert wait_until(lambda: reachable(a, b))


@pytest.mark.timeout(60)
def test_kill_all_reaches_process_group() -> None:
    script = ("import subprocess, sys, time\n"
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
              "print(c.pid, flush=True)\ntime.sleep(300)\n")
    with Lab() as lab:
        a = lab.add_host("a")
        leader = a.popen([PY, "-c", script], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
        assert leader.stdout is not None
        child = int(leader.stdout.readline())
        a.kill_all(signal.SIGKILL)
        assert leader.wait(timeout=10) == -signal.SIGKILL
        assert wait_until(lambda: not alive(child))


@pytest.mark.timeout(60)
def test_close_leaves_nothing_behind() -> None:
    daemon = ("import os, time\n"
              "if os.fork() == 0:\n"
              "    os.setsid()\n"
              "    if os.fork() == 0:\n"
              "        print(os.getpid(), flush=True)\n"
              "        time.sleep(300)\n"
              "    os._exit(0)\n"
              "time.sleep(300)\n")
    with Lab() as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        with Lab() as other:  # labs side by side get distinct subnets and names
            assert other.subnet != lab.subnet and other.suffix != lab.suffix
        start_server(a)
        sleeper = b.popen([PY, "-c", "import time; time.sleep(300)"])
        d = b.popen([PY, "-c", daemon], stdout=subprocess.PIPE, text=True)
        assert d.stdout is not None
        escaped = int(d.stdout.readline())  # left our tracking: only `ip netns pids` sees it
        pids = [p.pid for p in lab.procs] + [escaped]
        assert sleeper.pid in pids and all(alive(p) for p in pids)
        assert {a.ns, b.ns, lab.switch_ns} <= netns_names()
    assert not [n for n in netns_names() if lab.suffix in n or other.suffix in n]
    assert wait_until(lambda: not any(alive(p) for p in pids), 5)
    lab.close()  # idempotent


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fail_on", ["bridge", "addr"])
def test_cleanup_after_partial_setup(monkeypatch: pytest.MonkeyPatch, fail_on: str) -> None:
    created: list[str] = []
    real_ip = lab_mod._ip

    def flaky_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if args[:2] == ("netns", "add"):
            created.append(args[2])
        if fail_on in args:
            raise RuntimeError("injected failure")
        return real_ip(*args, check=check)

    monkeypatch.setattr(lab_mod, "_ip", flaky_ip)
    with pytest.raises(RuntimeError, match="injected"):
        with Lab() as lab:
            lab.add_host("a")
    assert created and not set(created) & netns_names()

