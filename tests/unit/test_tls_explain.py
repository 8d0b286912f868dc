"""explain_handshake_failure: TLS on one side only is named as the cause."""

from __future__ import annotations

import ssl

import pytest

from dispy.wire.codec import FrameError
from dispy.wire.connection import ConnectionClosed
from dispy.wire.tls import explain_handshake_failure

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("exc", [
    ConnectionClosed("connection closed by peer", received=0),
    FrameError("the peer speaks TLS (a TLS record came instead of a frame)"),
    ConnectionResetError(104, "Connection reset by peer"),
])
def test_plain_client_and_tls_node(exc):
    assert explain_handshake_failure(exc, tls_on=False).startswith(
        "the node uses TLS; give certfile/keyfile")


@pytest.mark.parametrize("exc", [
    ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
    ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
    ConnectionResetError(104, "reset"),
    ConnectionClosed("connection closed by peer", received=0),
    TimeoutError(),
])
def test_tls_client_and_plain_node(exc):
    text = explain_handshake_failure(exc, tls_on=True)
    assert "the node does not use TLS" in text or "no TLS answer" in text


def test_wrong_certificate():
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert "not the one in certfile" in explain_handshake_failure(exc, tls_on=True)


@pytest.mark.parametrize("tls_on", [False, True])
def test_unrelated_failures_are_left_to_the_caller(tls_on):
    assert explain_handshake_failure(ConnectionRefusedError(111, "refused"), tls_on) == ""
    assert explain_handshake_failure(ConnectionClosed("closed", received=3), False) == ""
    assert explain_handshake_failure(TimeoutError(), False) == ""
