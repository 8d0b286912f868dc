"""wire/localpath.py: what a daemon offers and what a program takes (real sockets, no
daemon)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from dispy.wire import connection, localpath
from dispy.wire.connection import Connection

pytestmark = pytest.mark.timeout(30)

NAME = "dispy-node-" + "0" * 32


async def _pair(host: str) -> tuple[Connection, Connection]:
    """A TCP connection to ``host``: (our end, the server's end)."""
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    async def handler(conn: Connection) -> None:
        accepted.set_result(conn)
        await asyncio.sleep(10)

    server = await connection.serve(handler, host, 0)
    port = server.sockets[0].getsockname()[1]
    ours = await Connection.open(host, port)
    theirs = await asyncio.wait_for(accepted, 5)
    server.close()
    return ours, theirs


def test_offered_only_to_this_host_and_only_well_formed_names():
    async def main() -> None:
        ours, theirs = await _pair("127.0.0.1")
        assert localpath.same_host(ours) and localpath.same_host(theirs)
        assert localpath.offer(theirs, NAME) == {"local": NAME}
        assert localpath.offer(theirs, None) == {}
        assert localpath.offered(ours, {"local": NAME}) == NAME
        for bad in ("/tmp/x", "dispy-node-../../etc", NAME + "/..", "\0" + NAME,
                    "dispy-node-" + "g" * 32, "x" * 5000, 42, None, ["a"]):
            assert localpath.offered(ours, {"local": bad}) is None, bad
        assert localpath.offered(ours, {}) is None
        ours.close()
        theirs.close()

    asyncio.run(main())


def test_a_unix_connection_is_not_offered_again():
    async def main() -> None:
        a, b = socket.socketpair()
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_unix_connection(Connection, sock=a)
        assert conn.peer == (localpath.PEER, 0)
        assert not localpath.same_host(conn)
        assert localpath.offer(conn, NAME) == {}
        assert localpath.offered(conn, {"local": NAME}) is None
        conn.close()
        b.close()

    asyncio.run(main())


def test_listen_gives_fresh_names_and_connect_reaches_them():
    async def main() -> None:
        first, second = localpath.listen("node"), localpath.listen("node")
        assert first is not None and second is not None
        assert first[1] != second[1]
        reached: asyncio.Future = asyncio.get_running_loop().create_future()

        async def handler(conn: Connection) -> None:
            reached.set_result(conn.peer)

        server = await connection.serve_peers(handler, first[0])
        conn = await localpath.connect(first[1])
        assert await asyncio.wait_for(reached, 5) == (localpath.PEER, 0)
        conn.close()
        server.close()
        second[0].close()
        with pytest.raises(OSError):
            await localpath.connect(second[1])  # closed: refused at once

    asyncio.run(main())


def _session(conn, addr="10.0.0.7"):
    return type("S", (), {"conn": conn, "addr": addr})()


def test_carries_on_only_a_program_session_open_now():
    from dispy.wire.handshake import HandshakeError

    assert localpath.carries_on({"role": "client"}, _session(object())) == "10.0.0.7"
    assert localpath.carries_on({}, _session(object())) == "10.0.0.7"
    for hello, session in (({}, None), ({}, _session(None)),
                           ({"role": "admin"}, _session(object()))):
        with pytest.raises(HandshakeError, match="no client session"):
            localpath.carries_on(hello, session)


def test_take_keeps_tcp_unless_the_same_daemon_answers():
    """Another id, a missing id, a scheduler where a node was, a handshake that fails in
    an unforeseen way: None (keep TCP), and the local connection is closed."""
    async def main() -> None:
        got = localpath.listen("node")
        assert got is not None
        sock, name = got
        server = await connection.serve_peers(lambda conn: asyncio.sleep(5), sock)
        opened: list[Connection] = []

        def answering(welcome):
            async def handshake(conn: Connection) -> dict:
                opened.append(conn)
                if isinstance(welcome, Exception):
                    raise welcome
                return welcome
            return handshake

        first = {"node_id": "a" * 32}
        for welcome, tcp in (({"node_id": "b" * 32}, first), ({}, {}),
                             ({"node_id": None}, {"node_id": None}),
                             ({"node_id": "a" * 32, "scheduler": True}, first),
                             (TypeError("odd"), first)):
            assert await localpath.take(name, answering(welcome), tcp, "node_id", 5,
                                        "test") is None
            assert opened[-1].is_closing()
        moved = await localpath.take(name, answering(dict(first)), first, "node_id", 5,
                                     "test")
        assert moved is not None and moved[1] == first
        moved[0].close()
        server.close()

    asyncio.run(main())


def test_held_frames_wait_then_move_in_order():
    """A held connection writes nothing; handed over, its frames follow what the other
    connection queued (its welcome) in their order; a peer that speaks releases it."""
    async def main() -> None:
        a_ours, a_theirs = await _pair("127.0.0.1")
        b_ours, b_theirs = await _pair("127.0.0.1")
        a_theirs.hold()
        a_theirs.send({"op": "one"})
        a_theirs.send({"op": "two"}, now=True)
        await asyncio.sleep(0.05)
        assert a_ours.pending() == 0  # held
        b_theirs.send({"op": "welcome"})
        a_theirs.hand_over(b_theirs)
        ops = [(await b_ours.recv(5))[0]["op"] for _ in range(3)]
        assert ops == ["welcome", "one", "two"]
        c_ours, c_theirs = await _pair("127.0.0.1")
        c_theirs.hold()
        c_theirs.send({"op": "waiting"})
        c_ours.send({"op": "ack"})  # the peer speaks here: released
        assert (await c_ours.recv(5))[0]["op"] == "waiting"
        for conn in (a_ours, a_theirs, b_ours, b_theirs, c_ours, c_theirs):
            conn.close()

    asyncio.run(main())
