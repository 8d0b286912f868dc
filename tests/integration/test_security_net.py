"""Network-facing hardening: forged log lines, pre-auth connection floods, TLS handshake
timeouts, discovery amplification and announcement floods (real daemons, real sockets)."""

from __future__ import annotations

import socket

import pytest

from dispy.wire import frames

pytestmark = pytest.mark.timeout(90)

FAKE = "2026-01-01 INFO fake"


def _send_hello(port: int, hello: dict) -> None:
    """Send one hello frame and read until the node closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"".join(bytes(p) for p in frames.encode(hello)))
        try:
            while sock.recv(4096):
                pass
        except (TimeoutError, ConnectionResetError):
            pass


def test_peer_strings_cannot_forge_log_lines(node):
    evil = f"1.0\n{FAKE}\r\n{FAKE} again"
    _send_hello(node.port, {"op": "hello", "proto": 999, "version": evil, "nonce": "ab",
                            "client_name": evil})
    node.wait_for("protocol version mismatch")
    lines = node.output().splitlines()
    assert not [line for line in lines if line.startswith(FAKE)], node.output()
    assert any("1.0\\n2026-01-01 INFO fake" in line for line in lines)
