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
