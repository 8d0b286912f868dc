"""A real OpenSSH server in a lab host, with its own host key and one client key.

Each server has a private directory (config, keys, pid file): nothing outside it and the
namespace is touched, except ``/run/sshd`` (sshd's privilege separation directory),
created when missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from .lab import Host

SSHD = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/sbin") or "/usr/sbin/sshd"


def available() -> str | None:
    """None when an sshd and ssh can run here, else why not (for pytest.skip)."""
    if not os.access(SSHD, os.X_OK):
        return "OpenSSH server (sshd) is not installed"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "OpenSSH client is not installed"
    return None


def keypair(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, timeout=30, capture_output=True)
    return path


class SSHServer:
    """sshd on ``host`` port 22, letting in whoever holds ``client_key``."""

    def __init__(self, host: Host, workdir: Path, client_key: Path) -> None:
        self.host, self.dir = host, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        host_key = keypair(workdir / "host_key")
        auth = workdir / "authorized_keys"
        auth.write_text(Path(f"{client_key}.pub").read_text())
        auth.chmod(0o600)
        self.log = workdir / "sshd.log"
        conf = workdir / "sshd_config"
        conf.write_text("\n".join([
            f"ListenAddress {host.ip}", "Port 22", f"HostKey {host_key}",
            f"PidFile {workdir / 'sshd.pid'}", f"AuthorizedKeysFile {auth}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "AllowTcpForwarding yes", "X11Forwarding no", "PrintMotd no",
            f"SetEnv HOME={workdir / 'home'}", ""]))
        (workdir / "home").mkdir(exist_ok=True)
        with open(self.log, "wb") as fh:
            self.proc = host.popen([SSHD, "-D", "-e", "-f", str(conf)], stdout=fh,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Server listening" in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"sshd did not start:\n{self.log.read_text(errors='replace')}")


def client_options(key: Path) -> list[str]:
    """``dispy ssh`` options for a lab: the key, and no host key checking (the host keys
    are made up for the test)."""
    return ["--identity", str(key), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
