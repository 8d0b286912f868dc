"""A virtual LAN of Linux network namespaces for dispy integration tests.

Why: dispy finds nodes with UDP broadcast and must cope with nodes dropping off the network.
Testing that for real needs several "machines" on one broadcast domain whose cables we can
cut. Network namespaces give us that on one box without touching the box's own network:
each Lab owns a private "switch" namespace holding a bridge, and every host namespace is
wired to that bridge with a veth pair. Nothing is ever created in the root namespace
(a host's own /etc/hosts lives in /etc/netns/<its namespace>, removed with the Lab).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IP = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin") or "/usr/sbin/ip"
# flock()ed files reserve a /24 per live Lab so parallel test runs pick distinct subnets;
# the kernel drops the lock when the holder dies, so a crashed run never leaks a reservation.
_LOCK_PATH = "/tmp/dispy-netlab-10.77.{}.0.lock"
#: per-namespace files ``ip netns exec`` mounts over /etc (a host's own /etc/hosts)
ETC_NETNS = Path("/etc/netns")
#: removed again (when empty) by the Lab closing last only if it was not there before us
_ETC_NETNS_OURS = not ETC_NETNS.exists()


def _sysctl(ns: str, setting: str) -> None:
    subprocess.run([IP, "netns", "exec", ns, "sysctl", "-qw", setting], check=True, timeout=30,
                   capture_output=True)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip`, raising with its stderr so a setup failure explains itself."""
    res = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


@functools.lru_cache(maxsize=1)
def netlab_available() -> str | None:
    """Return None if Labs can be built here, else a reason suitable for pytest.skip().

    Why: root alone is not enough (containers may forbid netns, bridges or veths), so the
    only reliable check is to build and delete a throwaway namespace once per process.
    """
    if os.geteuid() != 0:
        return "netlab needs root (network namespaces)"
    if not os.access(IP, os.X_OK):
        return "iproute2 'ip' command not found"
    ns = f"dnl-probe-{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", ns)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _ip("-n", ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", ns, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        subprocess.run([IP, "netns", "exec", ns, "true"], check=True, timeout=30)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return f"network namespaces are restricted here: {exc}"
    finally:
        _ip("netns", "del", ns, check=False)
    return None


def _own_group(popen_kw: dict[str, Any]) -> bool:
    """True if Popen kwargs make the child lead its own process group (killpg is safe)."""
    return bool(popen_kw.get("start_new_session")) or popen_kw.get("process_group") == 0


def _signal(proc: subprocess.Popen, own_group: bool, sig: int) -> None:
    """Signal a process (and its group if it leads one), ignoring ones already gone."""
    # killpg only while the leader is unreaped: then its pid (= pgid) cannot have been reused.
    if own_group and proc.returncode is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


class Host:
    """One machine on the LAN: a namespace with `lo` and `eth0` (address `ip`)."""

    def __init__(self, lab: Lab, name: str, ns: str, ip: str, switch_port: str) -> None:
        self.lab, self.name, self.ns, self.ip = lab, name, ns, ip
        self.switch_port = switch_port  # our veth end inside the switch namespace
        #: IPv6 addresses in an IPv6 Lab: global (fd77:...) and link-local (fe80::...%eth0)
        self.ip6: str | None = None
        self.link6: str | None = None
        self.procs: list[tuple[subprocess.Popen, bool]] = []

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ns={self.ns!r}, ip={self.ip!r})"

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start argv inside this host; tracked so the Lab can always kill it on close."""
        # `ip netns exec` execs argv in place, so proc.pid is the command's own pid.
        proc = subprocess.Popen([IP, "netns", "exec", self.ns, *argv], **kw)
        self.procs.append((proc, _own_group(kw)))
        return proc

    def run(self, argv: Sequence[str], *, input: Any = None, timeout: float | None = None,
            check: bool = False, capture_output: bool = False,
            **kw: Any) -> subprocess.CompletedProcess:
        """Like subprocess.run, but inside this host (and via popen, hence tracked)."""
        if input is not None:
            kw["stdin"] = subprocess.PIPE
        if capture_output:
            kw["stdout"] = kw["stderr"] = subprocess.PIPE
        proc = self.popen(argv, **kw)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            _signal(proc, _own_group(kw), signal.SIGKILL)
            proc.wait()
            raise
        res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check:
            res.check_returncode()
        return res

    def name_hosts(self, names: dict[str, str]) -> None:
        """Host names this host's resolver knows (name -> address), as its own
        /etc/hosts: ``ip netns exec`` mounts /etc/netns/<ns>/hosts over /etc/hosts for
        the processes started after this. The Lab removes the file when it closes."""
        folder = ETC_NETNS / self.ns
        self.lab.etc_dirs.append(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost", "::1 localhost"]
        lines += [f"{addr} {name}" for name, addr in names.items()]
        (folder / "hosts").write_text("\n".join(lines) + "\n")

    def link_down(self) -> None:
        """Cut this host's cable at the switch; its processes keep running, unreachable."""
        _ip("-n", self.lab.switch_ns, "link", "set", self.switch_port, "down")

    def link_up(self) -> None:
        """Plug the cable back in."""
        _ip("-n", self.lab.switch_ns, "link", "set", self.switch_port, "up")

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Send sig to every process started in this host (and their own process groups)."""
        for proc, own_group in self.procs:
            _signal(proc, own_group, sig)


class Router(Host):
    """A host on two Labs' switches that forwards between them (``ip`` on the first,
    ``outer_ip`` on the second); ``iptables`` inside it makes NAT."""

    outer_ip: str
    outer_ip6: str


class Lab:
    """A switch namespace with a bridge plus any number of hosts; use as a context manager.

    Every created namespace is registered before it is configured, so close() (idempotent)
    removes everything even when setup failed halfway.
    """

    def __init__(self, subnet: str | None = None, ipv4: bool = True,
                 ipv6: bool | str = False) -> None:
        self.suffix = secrets.token_hex(3)  # unique tag in every ns/interface name
        self.hosts: dict[str, Host] = {}
        self.namespaces: list[str] = []
        #: /etc/netns/<ns> folders of ``Host.name_hosts``, removed by close
        self.etc_dirs: list[Path] = []
        self._lock_fd: int | None = None
        self._lock_path = ""
        self._next = 1
        #: address families of the hosts: IPv4 (``ip``), and IPv6 (``ip6``, with a
        #: link-local one, ``link6``, as every IPv6 interface has; ``ipv6="link-local"``:
        #: only that one)
        self.ipv4, self.ipv6 = ipv4, ipv6
        self.switch_ns = f"dnl-sw-{self.suffix}"
        self.bridge = f"br{self.suffix}"
        #: default routes of this Lab's hosts (set by add_router), None: no route out
        self.gateway: str | None = None
        self.gateway6: str | None = None
        try:
            self.subnet = ipaddress.IPv4Network(subnet) if subnet else self._reserve_subnet()
            #: the IPv6 twin of the IPv4 subnet (fd77:N::/64, N from 10.77.N.0)
            self.subnet6 = ipaddress.IPv6Network(
                f"fd77:{int(self.subnet.network_address.packed[2]):x}::/64")
            self.broadcast = str(self.subnet.broadcast_address)
            self._add_ns(self.switch_ns)
            sw = self.switch_ns
            # no multicast snooping: no querier runs here, so snooping would drop groups
            _ip("-n", sw, "link", "add", self.bridge, "type", "bridge", "stp_state", "0",
                "mcast_snooping", "0")
            _ip("-n", sw, "link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    def _reserve_subnet(self) -> ipaddress.IPv4Network:
        """Pick a random free 10.77.N.0/24 so Labs running side by side never share one."""
        for n in random.sample(range(1, 255), 254):
            path = _LOCK_PATH.format(n)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # the holder before us removes the file when done (close): a lock on a
                # removed file reserves nothing, so it must still be the file at the path
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    raise OSError("lock file was removed")
            except OSError:
                os.close(fd)
                continue
            self._lock_fd, self._lock_path = fd, path
            return ipaddress.IPv4Network(f"10.77.{n}.0/24")
        raise RuntimeError("no free 10.77.N.0/24 subnet for a netlab Lab")

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self.namespaces.append(ns)

    def add_host(self, name: str) -> Host:
        """Create a host namespace wired to the switch, with the next free address."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", name) or name in self.hosts:
            raise ValueError(f"bad or duplicate host name {name!r}")
        idx, self._next = self._next, self._next + 1
        addr = self.subnet.network_address + idx
        if addr >= self.subnet.broadcast_address:
            raise RuntimeError(f"subnet {self.subnet} is full")
        ns, sw = f"dnl-{name}-{self.suffix}", self.switch_ns
        port, peer = f"v{idx}{self.suffix}", f"h{idx}{self.suffix}"  # <= 10 chars (IFNAMSIZ)
        self._add_ns(ns)
        _ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", peer)
        _ip("-n", sw, "link", "set", peer, "netns", ns)
        _ip("-n", sw, "link", "set", port, "master", self.bridge, "up")
        _ip("-n", ns, "link", "set", peer, "name", "eth0")
        if self.ipv4:
            cidr = f"{addr}/{self.subnet.prefixlen}"
            _ip("-n", ns, "addr", "add", cidr, "broadcast", self.broadcast, "dev", "eth0")
        ip6 = link6 = None
        if self.ipv6:
            # duplicate address detection would hold new addresses back for seconds
            _sysctl(ns, "net.ipv6.conf.eth0.accept_dad=0")
            ip6 = str(self.subnet6.network_address + idx)
            link6 = f"fe80::77:{idx:x}"
            _ip("-n", ns, "link", "set", "eth0", "addrgenmode", "none")  # only ours
            _ip("-n", ns, "addr", "add", f"{link6}/64", "dev", "eth0", "nodad")
            if self.ipv6 is True:
                _ip("-n", ns, "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
            else:
                ip6 = None
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", "eth0", "up")
        host = self.hosts[name] = Host(self, name, ns, str(addr) if self.ipv4 else "", port)
        host.ip6 = ip6
        host.link6 = f"{link6}%eth0" if link6 else None
        self.route_out(host)
        return host

    def route_out(self, host: Host) -> None:
        """Give ``host`` this Lab's default routes (none until a router is added)."""
        if self.gateway is not None:
            _ip("-n", host.ns, "route", "replace", "default", "via", self.gateway)
        if self.gateway6 is not None:
            _ip("-n", host.ns, "-6", "route", "replace", "default", "via", self.gateway6)

    def add_router(self, other: Lab, name: str = "router", route_here: bool = True,
                   route_there: bool = True) -> Router:
        """A router between this Lab and ``other`` (address .254 on both subnets); with
        ``route_here``/``route_there`` that side's hosts (also later ones) route through
        it. Broadcasts stay on their own subnet, as on real routers."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", name) or name in self.hosts:
            raise ValueError(f"bad or duplicate host name {name!r}")
        ns = f"dnl-{name}-{self.suffix}"
        self._add_ns(ns)
        sides = []
        for i, lab in enumerate((self, other)):
            addr = lab.subnet.broadcast_address - 1
            addr6 = lab.subnet6.network_address + 254
            port, peer = f"r{i}{self.suffix}", f"q{i}{self.suffix}"
            dev = f"eth{i}"
            _ip("-n", lab.switch_ns, "link", "add", port, "type", "veth", "peer", "name", peer)
            _ip("-n", lab.switch_ns, "link", "set", peer, "netns", ns)
            _ip("-n", lab.switch_ns, "link", "set", port, "master", lab.bridge, "up")
            _ip("-n", ns, "link", "set", peer, "name", dev)
            if lab.ipv4:
                _ip("-n", ns, "addr", "add", f"{addr}/{lab.subnet.prefixlen}", "broadcast",
                    lab.broadcast, "dev", dev)
            if lab.ipv6:
                _sysctl(ns, f"net.ipv6.conf.{dev}.accept_dad=0")
                _ip("-n", ns, "addr", "add", f"{addr6}/64", "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", dev, "up")
            sides.append((lab, str(addr), str(addr6), port))
        _ip("-n", ns, "link", "set", "lo", "up")
        _sysctl(ns, "net.ipv4.ip_forward=1")
        _sysctl(ns, "net.ipv6.conf.all.forwarding=1")
        router = Router(self, name, ns, sides[0][1] if self.ipv4 else "", sides[0][3])
        router.outer_ip = sides[1][1]
        router.ip6, router.outer_ip6 = sides[0][2], sides[1][2]
        self.hosts[name] = router
        for (lab, addr, addr6, _), route in zip(sides, (route_here, route_there), strict=True):
            if not route:
                continue
            lab.gateway = addr if lab.ipv4 else None
            lab.gateway6 = addr6 if lab.ipv6 else None
            for host in lab.hosts.values():
                if not isinstance(host, Router):
                    lab.route_out(host)
        return router

    @property
    def procs(self) -> list[subprocess.Popen]:
        """Every process started through this Lab's hosts."""
        return [p for h in self.hosts.values() for p, _ in h.procs]

    def close(self) -> None:
        """Kill all processes, delete all namespaces, release the subnet. Idempotent."""
        for host in self.hosts.values():
            host.kill_all(signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                with contextlib.suppress(OSError, AttributeError):
                    pipe.close()  # the process is gone; avoid ResourceWarnings
        for ns in reversed(self.namespaces):
            _kill_ns_pids(ns)
            _ip("netns", "del", ns, check=False)
        self.namespaces.clear()
        for folder in self.etc_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        if self.etc_dirs and _ETC_NETNS_OURS:
            with contextlib.suppress(OSError):
                ETC_NETNS.rmdir()  # only when no other Lab has files there now
        self.etc_dirs.clear()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path)  # still locked: nobody can take it meanwhile
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill_ns_pids(ns: str, timeout: float = 5.0) -> None:
    """SIGKILL whatever still lives in ns (daemons, grandchildren) until it is empty.

    Why: deleting a namespace only drops its name; processes would keep it (and the ports
    they hold) alive and leak into later tests.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()]
        pids = [p for p in pids if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
