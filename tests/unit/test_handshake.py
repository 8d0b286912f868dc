"""Mutual authentication: client_handshake against server_handshake, in process."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
from dispy.wire.frames import PRE_AUTH_MAX_HEADER, FrameError, encode, read_frame

from dispy.config import PROTOCOL_VERSION
from dispy.wire import auth
from dispy.wire.handshake import HandshakeError, client_handshake, server_handshake

pytestmark = pytest.mark.timeout(30)

SECRET = "s3cr3t-Pa55phrase-\u00e9"
TIMEOUT = 5.0


class TapWriter:
    """Forwards to a StreamWriter and keeps a copy of every byte written."""

    def __init__(self, writer):
        self.writer = writer
        self.data = bytearray()

    def write(self, data):
        self.data += bytes(data)
        self.writer.write(data)

    def writelines(self, pieces):
        for piece in pieces:
            self.write(piece)

    def __getattr__(self, name):
        return getattr(self.writer, name)


async def connection():
    """Two connected asyncio streams: (client reader, writer), (server reader, writer)."""
    a, b = socket.socketpair()
    client = await asyncio.open_connection(sock=a)
    server = await asyncio.open_connection(sock=b)
    return client, server


async def close(*writers):
    for writer in writers:
        writer.close()
    for writer in writers:
        try:
            await writer.wait_closed()
        except OSError:
            pass


def welcome_of(hello):
    return {"name": "node-1", "cpus": 4, "client": hello.get("client")}


async def run_both(client_secret, server_secret, tap=False):
    """Run a real handshake; returns (client result or exception, server result or exception,
    bytes the client wrote)."""
    (cr, cw), (sr, sw) = await connection()
    client_writer = TapWriter(cw) if tap else cw

    async def client():
        try:
            return await client_handshake(cr, client_writer, client_secret, {"client": "c1"},
                                          TIMEOUT)
        finally:
            cw.close()  # like a real client: a failed handshake closes the connection

    async def server():
        return await server_handshake(sr, sw, server_secret, welcome_of, TIMEOUT, name="node X")

    c, s = await asyncio.gather(client(), server(), return_exceptions=True)
    await close(cw, sw)
    return c, s, bytes(client_writer.data) if tap else b""


async def send(writer, header, buffers=()):
    writer.writelines(encode(header, buffers))
    await writer.drain()


async def recv(reader):
    header, _ = await asyncio.wait_for(read_frame(reader), TIMEOUT)
    return header


def test_same_secret_succeeds():
    c, s, _ = asyncio.run(run_both(SECRET, SECRET))
    assert c == {"op": "welcome", "name": "node-1", "cpus": 4, "client": "c1"}
    assert s["op"] == "hello"
    assert s["client"] == "c1"
    assert s["proto"] == PROTOCOL_VERSION


def test_empty_secret_on_both_sides():
    c, s, _ = asyncio.run(run_both("", ""))
    assert c["op"] == "welcome"
    assert s["op"] == "hello"


def test_none_secret_same_as_empty():
    c, s, _ = asyncio.run(run_both(None, ""))
    assert c["op"] == "welcome"


@pytest.mark.parametrize("client_secret,server_secret", [
    ("right", "wrong"), ("", "x"), ("x", ""), (SECRET, SECRET + " "),
])
def test_wrong_secret(client_secret, server_secret):
    c, s, _ = asyncio.run(run_both(client_secret, server_secret))
    # The server proves itself first, so the client notices and tells the server why.
    assert isinstance(c, HandshakeError)
    assert "secret mismatch" in str(c)
    assert isinstance(s, HandshakeError)
    assert "secret mismatch" in str(s)


def test_wrong_secret_detected_by_server():
    """A client that skips checking the server and sends a proof with the wrong key."""

    async def run():
        (cr, cw), (sr, sw) = await connection()
        server = asyncio.ensure_future(server_handshake(sr, sw, "right", welcome_of, TIMEOUT,
                                                        name="node X"))
        nonce = auth.new_nonce()
        await send(cw, {"op": "hello", "proto": PROTOCOL_VERSION, "nonce": nonce})
        challenge = await recv(cr)
        key = auth.derive_key("wrong")
        await send(cw, {"op": "auth",
                        "mac": auth.proof(key, auth.CLIENT_ROLE, nonce, challenge["nonce"])})
        answer = await recv(cr)
        with pytest.raises(HandshakeError, match="secret mismatch"):
            await server
        await close(cw, sw)
        return answer

    answer = asyncio.run(run())
    assert answer["op"] == "error"
    assert "secret mismatch" in answer["reason"]
    assert "node X" in answer["reason"]


def test_protocol_version_mismatch():
    async def run():
        (cr, cw), (sr, sw) = await connection()
        server = asyncio.ensure_future(server_handshake(sr, sw, SECRET, welcome_of, TIMEOUT,
                                                        name="node X"))
        await send(cw, {"op": "hello", "proto": 999, "version": "99.0", "nonce": "ab"})
        answer = await recv(cr)
        with pytest.raises(HandshakeError, match="protocol version mismatch"):
            await server
        await close(cw, sw)
        return answer

    answer = asyncio.run(run())
    assert answer["op"] == "error"
    reason = answer["reason"]
    assert f"protocol {PROTOCOL_VERSION}" in reason
    assert "protocol 999" in reason
    assert "99.0" in reason
    assert "mac" not in answer and "nonce" not in answer


def test_client_sees_server_error_frame():
    async def run():
        (cr, cw), (sr, sw) = await connection()
        client = asyncio.ensure_future(client_handshake(cr, cw, SECRET, {}, TIMEOUT))
        await recv(sr)
        await send(sw, {"op": "error", "reason": "go away"})
        with pytest.raises(HandshakeError, match="go away"):
            await client
        await close(cw, sw)

    asyncio.run(run())


def test_client_refuses_server_of_other_protocol():
    async def run():
        (cr, cw), (sr, sw) = await connection()
        client = asyncio.ensure_future(client_handshake(cr, cw, SECRET, {}, TIMEOUT))
        await recv(sr)
        await send(sw, {"op": "challenge", "proto": 999, "version": "9", "nonce": "x", "mac": ""})
        with pytest.raises(HandshakeError, match="protocol 999"):
            await client
        await close(cw, sw)

    asyncio.run(run())


@pytest.mark.parametrize("challenge", [
    {"op": "challenge", "proto": PROTOCOL_VERSION},
    {"op": "challenge", "proto": PROTOCOL_VERSION, "nonce": 5, "mac": "x"},
    {"op": "challenge", "proto": PROTOCOL_VERSION, "nonce": "ab", "mac": 7},
    {"op": "challenge", "proto": PROTOCOL_VERSION, "nonce": "ab", "mac": "0" * 64},
])
def test_client_refuses_bad_challenge(challenge):
    async def run():
        (cr, cw), (sr, sw) = await connection()
        client = asyncio.ensure_future(client_handshake(cr, cw, SECRET, {}, TIMEOUT))
        await recv(sr)
        await send(sw, challenge)
        with pytest.raises(HandshakeError, match="secret mismatch"):
            await client
        await close(cw, sw)

    asyncio.run(run())


def test_client_refuses_server_that_does_not_welcome():
    """A server that proves the secret but then says something other than welcome."""

    async def run():
        (cr, cw), (sr, sw) = await connection()
        client = asyncio.ensure_future(client_handshake(cr, cw, SECRET, {}, TIMEOUT))
        hello = await recv(sr)
        nonce = auth.new_nonce()
        key = auth.derive_key(SECRET)
        await send(sw, {"op": "challenge", "proto": PROTOCOL_VERSION, "nonce": nonce,
                        "mac": auth.proof(key, auth.SERVER_ROLE, nonce, hello["nonce"])})
        answer = await recv(sr)
        assert auth.check(key, auth.CLIENT_ROLE, hello["nonce"], nonce, answer["mac"])
        await send(sw, {"op": "nope", "reason": "busy"})
        with pytest.raises(HandshakeError, match="busy"):
            await client
        await close(cw, sw)

    asyncio.run(run())


def test_replay_of_recorded_client_is_refused():
    async def run():
        # 1. A genuine handshake, recording every byte the client wrote.
        c, s, recorded = await run_both(SECRET, SECRET, tap=True)
        assert c["op"] == "welcome"
        reader = asyncio.StreamReader()
        reader.feed_data(recorded)
        reader.feed_eof()
        hello_frame = await read_frame(reader)
        auth_frame = await read_frame(reader)
        assert hello_frame[0]["op"] == "hello" and auth_frame[0]["op"] == "auth"
        hello_bytes = b"".join(bytes(p) for p in encode(*hello_frame))
        auth_bytes = b"".join(bytes(p) for p in encode(*auth_frame))
        assert hello_bytes + auth_bytes == recorded

        # 2. An attacker without the secret replays them verbatim to the server.
        (cr, cw), (sr, sw) = await connection()
        server = asyncio.ensure_future(server_handshake(sr, sw, SECRET, welcome_of, TIMEOUT))
        cw.write(hello_bytes)
        await cw.drain()
        challenge = await recv(cr)
        assert challenge["op"] == "challenge"
        cw.write(auth_bytes)
        await cw.drain()
        answer = await recv(cr)
        with pytest.raises(HandshakeError, match="secret mismatch"):
            await server
        await close(cw, sw)
        return answer

    answer = asyncio.run(run())
    assert answer["op"] == "error"


def test_reflection_of_server_proof_is_refused():
    async def run():
        (cr, cw), (sr, sw) = await connection()
        server = asyncio.ensure_future(server_handshake(sr, sw, SECRET, welcome_of, TIMEOUT))
        nonce = auth.new_nonce()
        await send(cw, {"op": "hello", "proto": PROTOCOL_VERSION, "nonce": nonce})
        challenge = await recv(cr)
        # Send the server's own MAC back as our proof.
        await send(cw, {"op": "auth", "mac": challenge["mac"]})
        answer = await recv(cr)
        with pytest.raises(HandshakeError, match="secret mismatch"):
            await server
        await close(cw, sw)
        return answer

    assert asyncio.run(run())["op"] == "error"


def test_reflection_with_nonce_swap_is_refused():
    """Use a second connection to make the server MAC our first connection's nonces."""

    async def run():
        (cr, cw), (sr, sw) = await connection()
        (cr2, cw2), (sr2, sw2) = await connection()
        server1 = asyncio.ensure_future(server_handshake(sr, sw, SECRET, welcome_of, TIMEOUT))
        server2 = asyncio.ensure_future(server_handshake(sr2, sw2, SECRET, welcome_of, TIMEOUT))
        nonce = auth.new_nonce()
        await send(cw, {"op": "hello", "proto": PROTOCOL_VERSION, "nonce": nonce})
        challenge = await recv(cr)
        # Second connection: offer the server's first nonce as our nonce.
        await send(cw2, {"op": "hello", "proto": PROTOCOL_VERSION, "nonce": challenge["nonce"]})
        challenge2 = await recv(cr2)
        await send(cw, {"op": "auth", "mac": challenge2["mac"]})
        answer = await recv(cr)
        with pytest.raises(HandshakeError):
            await server1
        await close(cw, sw, cw2)
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await server2
        await close(sw2)
        return answer

    assert asyncio.run(run())["op"] == "error"


def test_first_frame_not_hello():
    async def run():
        (cr, cw), (sr, sw) = await connection()
        server = asyncio.ensure_future(server_handshake(sr, sw, SECRET, welcome_of, TIMEOUT))
        await send(cw, {"op": "auth", "mac": "x"})
        with pytest.raises(HandshakeError, match="not a hello"):
            await server
        await close(cw, sw)

    asyncio.run(run())


def test_hello_without_string_nonce():
    async def run():
        (cr, cw), (sr, sw) = await connection()
        server = asyncio.ensure_future(server_handshake(sr, sw, SECRET, welcome_of, TIMEOUT))
        await send(cw, {"op": "hello", "proto": PROTOCOL_VERSION, "nonce": 12})
        with pytest.raises(HandshakeError, match="not a hello"):
            await server
        await close(cw, sw)

    asyncio.run(run())


def test_pre_auth_limits():
    async def run(header, buffers):
        (cr, cw), (sr, sw) = await connection()
        server = asyncio.ensure_future(server_handshake(sr, sw, SECRET, welcome_of, TIMEOUT))
        await send(cw, header, buffers)
        with pytest.raises(FrameError):
            await server
        await close(cw, sw)

    big = {"op": "hello", "proto": PROTOCOL_VERSION, "nonce": "x" * PRE_AUTH_MAX_HEADER}
    asyncio.run(run(big, ()))
    small = {"op": "hello", "proto": PROTOCOL_VERSION, "nonce": "ab"}
    asyncio.run(run(small, [b"pickle?"]))  # no buffers before authentication


def test_server_times_out_on_silent_client():
    async def run():
        (cr, cw), (sr, sw) = await connection()
        with pytest.raises(asyncio.TimeoutError):
            await server_handshake(sr, sw, SECRET, welcome_of, 0.05)
        await close(cw, sw)

    asyncio.run(run())


def test_secret_never_on_the_wire():
    c, s, written = asyncio.run(run_both(SECRET, SECRET, tap=True))
    assert c["op"] == "welcome"
    assert written
    for form in (SECRET.encode(), SECRET.encode("utf-16-le"), SECRET.encode().hex().encode(),
                 b"s3cr3t", auth.derive_key(SECRET), auth.derive_key(SECRET).hex().encode()):
        assert form not in written
    # Same when the secrets differ (the client stops before sending any proof).
    c, s, written = asyncio.run(run_both(SECRET, "other", tap=True))
    assert isinstance(c, HandshakeError)
    assert SECRET.encode() not in written and b"s3cr3t" not in written


def test_handshakes_use_fresh_nonces():
    async def run():
        _, _, one = await run_both(SECRET, SECRET, tap=True)
        _, _, two = await run_both(SECRET, SECRET, tap=True)
        return one, two

    one, two = asyncio.run(run())
    assert one != two


@pytest.mark.parametrize("mac", [None, 1, b"00", ["a"], {"m": 1}, 1.5])
def test_check_rejects_non_str_macs(mac):
    key = auth.derive_key("k")
    assert auth.check(key, auth.CLIENT_ROLE, "a", "b", mac) is False


def test_check_and_proof():
    key = auth.derive_key("k")
    mac = auth.proof(key, auth.CLIENT_ROLE, "a", "b")
    assert auth.check(key, auth.CLIENT_ROLE, "a", "b", mac)
    assert not auth.check(key, auth.SERVER_ROLE, "a", "b", mac)  # role bound
    assert not auth.check(key, auth.CLIENT_ROLE, "b", "a", mac)  # direction bound
    assert not auth.check(auth.derive_key("K"), auth.CLIENT_ROLE, "a", "b", mac)
    assert not auth.check(key, auth.CLIENT_ROLE, "a", "b", mac.upper())
    assert auth.derive_key(None) == auth.derive_key("")
    assert auth.new_nonce() != auth.new_nonce()
    assert len(auth.new_nonce()) == 64


def test_deeply_nested_hello_is_refused_cleanly():
    async def run():
        (cr, cw), (sr, sw) = await connection()
        server = asyncio.ensure_future(server_handshake(sr, sw, SECRET, welcome_of, TIMEOUT))
        head = b"[" * 20000
        cw.write(struct.pack("!II", len(head), 0) + head)
        await cw.drain()
        try:
            with pytest.raises((HandshakeError, FrameError)):
                await server
        finally:
            await close(cw, sw)

    asyncio.run(run())
