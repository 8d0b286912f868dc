"""The handshake over real loopback sockets: Connection.open against wire.connection.serve,
mutual proof bound to the transcript, then sealed records both ways."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from relay import C2S, S2C, Link, Relay, Unit, plain_frame

from dispy.config import PROTOCOL_VERSION
from dispy.wire import auth, codec
from dispy.wire.codec import PRE_AUTH_MAX_HEADER, FrameError
from dispy.wire.connection import Connection, ConnectionClosed, serve
from dispy.wire.handshake import HandshakeError, client_handshake, rehearse, server_handshake

pytestmark = pytest.mark.timeout(30)

SECRET = "s3cr3t-Pa55phrase-\u00e9"
TIMEOUT = 5.0


def keys_for(secret: str | None) -> Callable[[str], bytes | None]:
    return lambda role: auth.derive_key(secret or "") if role == auth.CLIENT_ROLE else None


def welcome_of(hello: dict) -> dict:
    return {"name": "node-1", "cpus": 4, "client": hello.get("client_id")}


class Server:
    """A served port whose handler runs server_handshake, then echoes frames."""

    def __init__(self) -> None:
        self.outcome: asyncio.Future = asyncio.get_running_loop().create_future()
        self.after: asyncio.Future = asyncio.get_running_loop().create_future()
        self.port = 0
        self.conns: list[Connection] = []

    async def handler(self, conn: Connection, secret: str | None, timeout: float) -> None:
        self.conns.append(conn)
        try:
            hello = await server_handshake(conn, keys_for(secret), welcome_of, timeout,
                                           name="node X", identity={"node_id": "n-1"})
        except Exception as exc:
            self.outcome.set_result(exc)
            return
        self.outcome.set_result(hello)
        try:
            while True:
                header, bufs = await conn.recv()
                conn.send({**header, "echo": True}, bufs)
        except Exception as exc:
            self.after.set_result(exc)


@contextlib.asynccontextmanager
async def server(secret: str | None = SECRET, timeout: float = TIMEOUT,
                 handler: Callable[[Connection], Awaitable[None]] | None = None
                 ) -> AsyncIterator[Server]:
    srv = Server()

    async def run(conn: Connection) -> None:
        await (handler(conn) if handler else srv.handler(conn, secret, timeout))

    listener = await serve(run, "127.0.0.1", 0)
    srv.port = listener.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        listener.close()
        for conn in srv.conns:
            conn.close()


async def connect(port: int) -> Connection:
    return await Connection.open("127.0.0.1", port, timeout=TIMEOUT)


async def handshake(port: int, secret: Any = SECRET, **kw: Any) -> dict:
    conn = await connect(port)
    try:
        return await client_handshake(conn, secret, {"client_id": "c1"}, TIMEOUT, **kw)
    finally:
        conn.close()


async def outcome(srv: Server) -> Any:
    return await asyncio.wait_for(srv.outcome, TIMEOUT)


# ---- success ------------------------------------------------------------------------


def test_same_secret_succeeds_and_seals_both_ways():
    async def run():
        async with server() as srv:
            conn = await connect(srv.port)
            welcome = await client_handshake(conn, SECRET, {"client_id": "c1"}, TIMEOUT)
            hello = await outcome(srv)
            assert conn.sealed and srv.conns[0].sealed
            big = bytes(range(256)) * 1024
            conn.send({"op": "x"}, [big, b"b"])
            echoed = await conn.recv(TIMEOUT)
            conn.close()
            return welcome, hello, echoed

    welcome, hello, echoed = asyncio.run(run())
    assert welcome == {"op": "welcome", "name": "node-1", "cpus": 4, "client": "c1"}
    assert hello["op"] == "hello" and hello["client_id"] == "c1"
    assert hello["proto"] == PROTOCOL_VERSION
    assert echoed[0] == {"op": "x", "echo": True}
    assert [bytes(b) for b in echoed[1]] == [bytes(range(256)) * 1024, b"b"]


def through_relay(secret: str = SECRET, hook: Callable[[Link, Unit], bytes] | None = None,
                  exchange: bool = True) -> tuple[Any, Any, Any, Link]:
    """A handshake (and one echoed frame) through a Relay: (client result, server result,
    what the server saw after, the relayed link)."""
    async def run():
        async with server() as srv:
            with Relay(srv.port) as relay:
                relay.hook = hook
                conn = await connect(relay.port)
                try:
                    got = await client_handshake(conn, secret, {"client_id": "c1"}, TIMEOUT)
                    if exchange:
                        conn.send({"op": "x"}, [b"payload"])
                        got = (got, await conn.recv(TIMEOUT))
                except Exception as exc:
                    got = exc
                conn.close()
                server_got = await outcome(srv)
                after = None
                if not isinstance(server_got, Exception):
                    after = await asyncio.wait_for(srv.after, TIMEOUT)
                return got, server_got, after, relay.links[0]

    return asyncio.run(run())


def test_relayed_handshake_is_plain_then_sealed_per_direction():
    """A router passes; on the wire: hello, auth and challenge in plain, then records
    whose tags check with the transcript's keys, one key per direction."""
    got, hello, _, link = through_relay()
    assert not isinstance(got, Exception)
    plain = [(u.direction, u.ops()) for u in link.units if u.kind == "plain"]
    assert plain == [(C2S, ["hello"]), (S2C, ["challenge"]), (C2S, ["auth"])]
    assert link.records(S2C)[0].ops() == ["welcome"]  # the welcome is the first record
    assert link.records(C2S)[0].ops() == ["x"]
    first = {u.ops()[0]: u.frames[0][0] for u in link.units if u.kind == "plain"}
    digest = auth.transcript(first["hello"], first["challenge"])
    c2s, s2c = auth.session_keys(auth.derive_key(SECRET), digest)
    for direction, key, other in ((C2S, c2s, s2c), (S2C, s2c, c2s)):
        stream = b"".join(u.raw for u in link.records(direction))
        dec = codec.FrameDecoder()
        dec.seal(key, codec.FULL)
        dec.feed(stream)
        assert len(dec.frames) == len(link.records(direction))
        dec = codec.FrameDecoder()
        dec.seal(other, codec.FULL)
        with pytest.raises(FrameError, match="authentication tag"):
            dec.feed(stream)


def test_empty_secret_on_both_sides():
    async def run():
        async with server(secret="") as srv:
            return await handshake(srv.port, ""), await outcome(srv)

    welcome, hello = asyncio.run(run())
    assert welcome["op"] == "welcome" and hello["op"] == "hello"


def test_derived_key_works_as_the_secret():
    """A recover file keeps the derived key, not the secret."""
    async def run():
        async with server() as srv:
            return await handshake(srv.port, auth.derive_key(SECRET))

    assert asyncio.run(run())["op"] == "welcome"


# ---- refusals -----------------------------------------------------------------------


@pytest.mark.parametrize("client_secret,server_secret", [
    ("right", "wrong"), ("", "x"), ("x", ""), (SECRET, SECRET + " "),
])
def test_wrong_secret(client_secret, server_secret):
    """The server proves itself first: the client notices and tells the server why."""
    async def run():
        async with server(secret=server_secret) as srv:
            try:
                await handshake(srv.port, client_secret)
            except HandshakeError as exc:
                return exc, await outcome(srv)
            raise AssertionError("handshake with a wrong secret succeeded")

    client, srv = asyncio.run(run())
    assert "secret mismatch: the peer does not know this cluster's secret" in str(client)
    assert isinstance(srv, HandshakeError)
    assert "client gave up" in str(srv) and "secret mismatch" in str(srv)


async def raw_peer(port: int) -> Connection:
    return await connect(port)


def test_wrong_secret_detected_by_server():
    """A client that skips checking the server and proves with the wrong key."""
    async def run():
        async with server(secret="right") as srv:
            conn = await raw_peer(srv.port)
            hello = {"op": "hello", "proto": PROTOCOL_VERSION, "nonce": auth.new_nonce(),
                     "role": "client"}
            conn.send(hello)
            challenge, _ = await conn.recv(TIMEOUT)
            digest = auth.transcript(hello, challenge)
            conn.send({"op": "auth",
                       "mac": auth.proof(auth.derive_key("wrong"), "client", digest)})
            answer, _ = await conn.recv(TIMEOUT)
            conn.close()
            return answer, await outcome(srv)

    answer, srv = asyncio.run(run())
    assert answer["op"] == "error"
    assert "secret mismatch: the client does not know the secret of node X" in answer["reason"]
    assert isinstance(srv, HandshakeError) and "secret mismatch" in str(srv)


def test_protocol_version_mismatch_names_both_versions():
    async def run():
        async with server() as srv:
            conn = await raw_peer(srv.port)
            conn.send({"op": "hello", "proto": 999, "version": "99.0", "nonce": "ab"})
            answer, _ = await conn.recv(TIMEOUT)
            conn.close()
            return answer, await outcome(srv)

    answer, srv = asyncio.run(run())
    assert answer["op"] == "error"
    for reason in (answer["reason"], str(srv)):
        assert "protocol version mismatch" in reason
        assert f"protocol {PROTOCOL_VERSION}" in reason and "node X" in reason
        assert "protocol 999" in reason and "99.0" in reason
    assert "mac" not in answer and "nonce" not in answer


async def fake_server(reply: Callable[[Connection, dict], Awaitable[None]],
                      **kw: Any) -> Any:
    """Run client_handshake against a handler that answers the hello with ``reply``."""
    async def handler(conn: Connection) -> None:
        hello, _ = await conn.recv(TIMEOUT)
        await reply(conn, hello)
        with contextlib.suppress(Exception):
            while True:  # until the client closes
                await conn.recv(TIMEOUT)

    async with server(handler=handler) as srv:
        conn = await connect(srv.port)
        try:
            return await client_handshake(conn, SECRET, {}, kw.pop("timeout", TIMEOUT), **kw)
        except Exception as exc:
            return exc
        finally:
            conn.close()


def challenge_for(hello: dict, **extra: Any) -> dict:
    challenge = {"op": "challenge", "proto": PROTOCOL_VERSION, "nonce": auth.new_nonce(),
                 **extra}
    digest = auth.transcript(hello, challenge)
    return {**challenge, "mac": auth.proof(auth.derive_key(SECRET), "server", digest)}


def test_client_refuses_server_of_other_protocol():
    async def reply(conn, hello):
        conn.send({"op": "challenge", "proto": 999, "version": "9.9", "nonce": "x", "mac": ""})

    exc = asyncio.run(fake_server(reply))
    assert isinstance(exc, HandshakeError)
    assert "protocol 999" in str(exc) and f"protocol {PROTOCOL_VERSION}" in str(exc)
    assert "9.9" in str(exc)


def test_client_sees_server_error_frame():
    async def reply(conn, hello):
        conn.send({"op": "error", "reason": "go away"})

    exc = asyncio.run(fake_server(reply))
    assert isinstance(exc, HandshakeError) and "go away" in str(exc)


def test_role_not_served():
    async def run():
        async with server() as srv:
            try:
                await handshake(srv.port, role="admin")
            except HandshakeError as exc:
                return exc, await outcome(srv)
            raise AssertionError("role admin was served")

    client, srv = asyncio.run(run())
    for exc in (client, srv):
        assert "node X does not serve peers in role 'admin'" in str(exc)


@pytest.mark.parametrize("challenge", [
    {"op": "challenge", "proto": PROTOCOL_VERSION},
    {"op": "challenge", "proto": PROTOCOL_VERSION, "nonce": 5, "mac": "x"},
    {"op": "challenge", "proto": PROTOCOL_VERSION, "nonce": "ab", "mac": 7},
    {"op": "challenge", "proto": PROTOCOL_VERSION, "nonce": "ab", "mac": "0" * 64},
])
def test_client_refuses_bad_challenge(challenge):
    async def reply(conn, hello):
        conn.send(challenge)

    exc = asyncio.run(fake_server(reply))
    assert isinstance(exc, HandshakeError) and "secret mismatch" in str(exc)


def test_client_refuses_server_that_does_not_welcome():
    """A server that proves the secret, then says something other than welcome."""
    async def reply(conn, hello):
        challenge = challenge_for(hello)
        conn.send(challenge)
        answer, _ = await conn.recv(TIMEOUT)
        digest = auth.transcript(hello, {k: v for k, v in challenge.items()})
        assert auth.check(auth.derive_key(SECRET), "client", digest, answer["mac"])
        c2s, s2c = auth.session_keys(auth.derive_key(SECRET), digest)
        conn.seal(s2c, c2s, codec.FULL)
        conn.send({"op": "nope", "reason": "busy"})

    exc = asyncio.run(fake_server(reply))
    assert isinstance(exc, HandshakeError) and "busy" in str(exc)


def test_client_refuses_a_plain_welcome():
    """The welcome must be the first sealed record: a plain one (as a relay without the
    secret would have to send) fails the connection."""
    async def reply(conn, hello):
        conn.send(challenge_for(hello))
        await conn.recv(TIMEOUT)
        conn.send({"op": "welcome", "cpus": 64})

    exc = asyncio.run(fake_server(reply))
    assert isinstance(exc, FrameError) and "over the limit" in str(exc)


def test_first_frame_not_hello():
    async def run():
        async with server() as srv:
            conn = await raw_peer(srv.port)
            conn.send({"op": "auth", "mac": "x"})
            result = await outcome(srv)
            conn.close()
            return result

    exc = asyncio.run(run())
    assert isinstance(exc, HandshakeError) and "first frame is not a hello" in str(exc)


def test_hello_without_string_nonce():
    async def run():
        async with server() as srv:
            conn = await raw_peer(srv.port)
            conn.send({"op": "hello", "proto": PROTOCOL_VERSION, "nonce": 12})
            result = await outcome(srv)
            conn.close()
            return result

    assert "not a hello" in str(asyncio.run(run()))


@pytest.mark.parametrize("data", [
    plain_frame({"op": "hello", "proto": PROTOCOL_VERSION, "nonce": "x" * PRE_AUTH_MAX_HEADER},
                []),
    plain_frame({"op": "hello", "proto": PROTOCOL_VERSION, "nonce": "ab"}, [b"pickle?"]),
    struct.pack("!II", 20000, 0) + b"[" * 20000,  # deeply nested
], ids=["header", "buffer", "nested"])
def test_pre_auth_limits_at_the_server(data):
    async def run():
        async with server() as srv:
            conn = await raw_peer(srv.port)
            assert conn.transport is not None
            conn.transport.write(data)
            result = await outcome(srv)
            conn.close()
            return result

    assert isinstance(asyncio.run(run()), FrameError)


def test_pre_auth_limits_at_the_client():
    """No buffers from a daemon that has not proved the secret either."""
    async def reply(conn, hello):
        conn.send({**challenge_for(hello)}, [b"pickle?"])

    exc = asyncio.run(fake_server(reply))
    assert isinstance(exc, FrameError) and "over the limit of 0" in str(exc)


def test_server_times_out_on_silent_client():
    async def run():
        async with server(timeout=0.2) as srv:
            conn = await raw_peer(srv.port)
            result = await outcome(srv)
            conn.close()
            return result

    assert isinstance(asyncio.run(run()), asyncio.TimeoutError)


def test_client_times_out_on_silent_server():
    async def reply(conn, hello):
        await asyncio.sleep(0)  # never answers

    assert isinstance(asyncio.run(fake_server(reply, timeout=0.2)), asyncio.TimeoutError)


def test_client_times_out_waiting_for_the_welcome():
    async def reply(conn, hello):
        conn.send(challenge_for(hello))

    assert isinstance(asyncio.run(fake_server(reply, timeout=0.3)), asyncio.TimeoutError)


# ---- what a man in the middle can do ------------------------------------------------


def test_replay_of_recorded_client_is_refused():
    _, _, _, link = through_relay()
    hello_raw, auth_raw = (u.raw for u in link.units if u.direction == C2S and u.kind == "plain")

    async def run():
        async with server() as srv:
            conn = await raw_peer(srv.port)
            assert conn.transport is not None
            conn.transport.write(hello_raw)
            challenge, _ = await conn.recv(TIMEOUT)
            assert challenge["op"] == "challenge"
            conn.transport.write(auth_raw)
            answer, _ = await conn.recv(TIMEOUT)
            conn.close()
            return answer, await outcome(srv)

    answer, srv = asyncio.run(run())
    assert answer["op"] == "error" and isinstance(srv, HandshakeError)
    assert "secret mismatch" in str(srv)


def test_reflection_of_server_proof_is_refused():
    async def run():
        async with server() as srv:
            conn = await raw_peer(srv.port)
            conn.send({"op": "hello", "proto": PROTOCOL_VERSION, "nonce": auth.new_nonce()})
            challenge, _ = await conn.recv(TIMEOUT)
            conn.send({"op": "auth", "mac": challenge["mac"]})
            answer, _ = await conn.recv(TIMEOUT)
            conn.close()
            return answer, await outcome(srv)

    answer, srv = asyncio.run(run())
    assert answer["op"] == "error" and "secret mismatch" in str(srv)


def test_reflection_through_a_second_connection_is_refused():
    """The server's proof on a second connection, whose hello repeats the first
    connection's challenge, proves nothing on the first."""
    async def run():
        async with server() as srv:
            one, two = await raw_peer(srv.port), await raw_peer(srv.port)
            hello = {"op": "hello", "proto": PROTOCOL_VERSION, "nonce": auth.new_nonce()}
            one.send(hello)
            challenge, _ = await one.recv(TIMEOUT)
            two.send({**hello, "nonce": challenge["nonce"]})
            challenge2, _ = await two.recv(TIMEOUT)
            one.send({"op": "auth", "mac": challenge2["mac"]})
            answer, _ = await one.recv(TIMEOUT)
            one.close()
            two.close()
            return answer, await outcome(srv)

    answer, srv = asyncio.run(run())
    assert answer["op"] == "error" and "secret mismatch" in str(srv)


@pytest.mark.parametrize("direction,field", [(C2S, "client_id"), (C2S, "version"),
                                             (S2C, "node_id"), (S2C, "nonce")])
def test_relay_altering_the_handshake_breaks_it(direction, field):
    """Proofs cover the whole transcript: a relay that changes any field (the claimed
    identities too) makes the proofs fail."""
    def hook(link: Link, unit: Unit) -> bytes:
        if unit.kind == "plain" and unit.direction == direction and \
                unit.ops()[0] in ("hello", "challenge"):
            return plain_frame({**unit.frames[0][0], field: "f" * 64}, [])
        return unit.raw

    got, srv, _, _ = through_relay(hook=hook)
    assert isinstance(got, HandshakeError)
    assert isinstance(srv, HandshakeError)


@pytest.mark.parametrize("injected", [
    struct.pack("!II", 60, 0) + b'{"op":"close","cid":"c","x":"',
    struct.pack("!II", 60, 0)[:4],
    plain_frame({"op": "close", "cid": "c"}, []),
], ids=["header", "half-prefix", "frame"])
def test_relay_appending_to_the_auth_frame_gets_nothing_through(injected):
    def hook(link: Link, unit: Unit) -> bytes:
        if unit.kind == "plain" and unit.ops() == ["auth"]:
            return unit.raw + injected
        return unit.raw

    got, srv, after, _ = through_relay(hook=hook)
    assert isinstance(got, (ConnectionClosed, HandshakeError, OSError, FrameError))
    # the server never got a frame out of it: its first read after the handshake failed
    assert isinstance(srv, (FrameError, HandshakeError)) or isinstance(after, FrameError)


def test_secret_never_on_the_wire():
    for secret in (SECRET, "other"):
        _, _, _, link = through_relay(secret=secret)
        written = b"".join(u.raw for u in link.units)
        assert written
        for form in (SECRET.encode(), SECRET.encode("utf-16-le"), SECRET.encode().hex().encode(),
                     b"s3cr3t", auth.derive_key(SECRET), auth.derive_key(SECRET).hex().encode()):
            assert form not in written


def test_handshakes_use_fresh_nonces_and_keys():
    links = [through_relay()[3] for _ in range(2)]
    hellos = [next(u.frames[0][0] for u in link.units if u.ops() == ["hello"]) for link in links]
    assert hellos[0]["nonce"] != hellos[1]["nonce"]
    welcomes = [link.records(S2C)[0].raw for link in links]
    assert welcomes[0][-32:] != welcomes[1][-32:]


@pytest.mark.parametrize("mac", [None, 1, b"00", ["a"], {"m": 1}, 1.5])
def test_check_rejects_non_str_macs(mac):
    assert auth.check(auth.derive_key("k"), auth.CLIENT_ROLE, b"d" * 32, mac) is False


def test_check_and_proof():
    key = auth.derive_key("k")
    digest = auth.transcript({"op": "hello", "nonce": "a"}, {"op": "challenge", "nonce": "b"})
    other = auth.transcript({"op": "hello", "nonce": "b"}, {"op": "challenge", "nonce": "a"})
    mac = auth.proof(key, auth.CLIENT_ROLE, digest)
    assert auth.check(key, auth.CLIENT_ROLE, digest, mac)
    assert not auth.check(key, auth.SERVER_ROLE, digest, mac)  # role bound
    assert not auth.check(key, auth.CLIENT_ROLE, other, mac)  # transcript bound
    assert not auth.check(auth.derive_key("K"), auth.CLIENT_ROLE, digest, mac)
    assert not auth.check(key, auth.CLIENT_ROLE, digest, mac.upper())
    assert auth.transcript({"nonce": "a", "mac": "x"}, {}) == auth.transcript({"nonce": "a"}, {})
    c2s, s2c = auth.session_keys(key, digest)
    assert c2s != s2c and auth.session_keys(key, other) != (c2s, s2c)
    assert auth.derive_key(None) == auth.derive_key("")  # type: ignore[arg-type]
    assert auth.new_nonce() != auth.new_nonce() and len(auth.new_nonce()) == 64


def test_a_non_ascii_proof_is_a_mismatch_not_a_crash():
    from dispy.wire import auth

    key = auth.derive_key("s")
    assert not auth.check(key, auth.SERVER_ROLE, b"d" * 32, "\u00e9" * 64)
    assert not auth.check(key, auth.SERVER_ROLE, b"d" * 32, None)


def test_rehearsal_completes_and_leaves_nothing_open():
    """A daemon's rehearsal before it serves (``handshake.rehearse``): a whole handshake
    and a sealed frame each way, then both ends closed."""
    import os

    from dispy.wire.connection import Traffic

    before = set(os.listdir("/proc/self/fd"))
    counted = Traffic.received, Traffic.sent

    async def main():
        await rehearse()
        await asyncio.sleep(0.05)  # the transports' closing callbacks

    asyncio.run(main())
    assert set(os.listdir("/proc/self/fd")) <= before
    assert (Traffic.received, Traffic.sent) == counted  # not in a daemon's metrics


def test_a_rehearsal_that_fails_or_stalls_is_forgotten(monkeypatch):
    """It is only a speed-up: a daemon starts whatever becomes of it."""
    import socket

    from dispy.wire import handshake as module

    def no_pair(*args: Any) -> Any:
        raise OSError(24, "Too many open files")

    async def stalls(*args: Any, **kw: Any) -> Any:
        await asyncio.sleep(60)

    async def main():
        with monkeypatch.context() as m:
            m.setattr(socket, "socketpair", no_pair)
            await rehearse()
        with monkeypatch.context() as m:
            m.setattr(module, "server_handshake", stalls)
            loop = asyncio.get_running_loop()
            began = loop.time()
            await rehearse(timeout=0.2)
            assert loop.time() - began < 5

    asyncio.run(main())
