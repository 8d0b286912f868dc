"""How a node is found: it answers ``discover`` requests and announces itself to its
networks, to ``--scheduler_node`` and to the programs that asked lately (listeners.py).

Answers are bounded by the request's size (discovery cannot amplify an attacker's
traffic); what the node says of itself comes from the daemon (``describe``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from ..wire import auth, discovery, netif
from ..wire.discoverymsg import Discover, DiscoveryMessage, NodeAnnouncement
from .listeners import Listeners
from .options import NodeOptions

log = logging.getLogger("dispy.node")

#: ``describe(peer, client_id)``: the node's record as told to ``peer``
Describe = Callable[[str | None, str | None], dict[str, Any]]


class Announcer:
    def __init__(self, opts: NodeOptions, ifs: list[netif.Interface],
                 describe: Describe) -> None:
        self.opts, self.ifs, self.describe = opts, ifs, describe
        #: programs elsewhere that asked for nodes: they hear our announcements too
        self.listeners = Listeners(auth.derive_key(opts.secret) if opts.secret else None)
        self.udp: discovery.DiscoveryProtocol | None = None
        #: announcements waiting for --scheduler_node's name to resolve
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Listen on the node port (OSError when it is taken): clients ask by broadcast
        or multicast (ipv4_udp_multicast; IPv6), both are answered."""
        self.udp = await discovery.open_endpoint(
            self.opts.node_port, False, discovery.records(self.on_datagram, "dispynode"),
            "dispynode", self.ifs)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.udp is not None:
            self.udp.close()

    def announce(self) -> None:
        """Tell clients on our networks (and --scheduler_node, and the programs that
        asked lately) that this node is free; the address announced is --ext_ip_addr when
        given (a node behind NAT)."""
        if self.udp is None:
            return
        msg = NodeAnnouncement.of(self.describe(None, None))
        port = self.opts.scheduler_port
        ext = self.opts.ext_ip_addrs[0] if self.opts.ext_ip_addrs else None
        sent = set()
        for i in self.ifs:
            if i.loopback and i.ipv6 and any(j.loopback and not j.ipv6 for j in self.ifs):
                continue  # this host heard it on 127.0.0.1
            discovery.send_to_lan(self.udp, dataclasses.replace(msg, ip_addr=ext or i.address),
                                  port, [i], self.opts.ipv4_udp_multicast)
            sent.add(i.broadcast or i.address)
        if self.opts.scheduler_node:
            target = netif.literal(self.opts.scheduler_node)
            if target is not None:
                self._to_scheduler(msg, target, sent)
            elif not self._tasks:  # a name: resolved off the loop (a slow DNS must not
                # stop the jobs), one lookup at a time
                task = asyncio.get_running_loop().create_task(
                    self._resolved(self.opts.scheduler_node, sent))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        for ip, lport in self.listeners.current(time.monotonic()):
            # also on our own network: a NAT gateway forwarding to its program hears
            # no broadcast, and a program that did sees a node it knows (no harm)
            self.udp.send(NodeAnnouncement.of(self.describe(ip, None)), (ip, lport))
            log.debug("announced to %s, which asked for nodes lately",
                      netif.host_port(ip, lport))

    async def _resolved(self, name: str, sent: set[str]) -> None:
        try:
            target = await netif.resolve_async(name)
        except OSError as exc:
            log.warning("cannot resolve --scheduler_node %s: %s", name, exc)
            return
        # what the node says of itself now, not when the lookup began
        self._to_scheduler(NodeAnnouncement.of(self.describe(None, None)), target, sent)

    def _to_scheduler(self, msg: NodeAnnouncement, target: str, sent: set[str]) -> None:
        if self.udp is None:
            return
        if target not in sent:
            self.udp.send(msg, (target, self.opts.scheduler_port))
        log.debug("announced to --scheduler_node %s",
                  netif.host_port(target, self.opts.scheduler_port))

    def on_datagram(self, msg: DiscoveryMessage, addr: tuple) -> None:
        if not isinstance(msg, Discover):
            return
        assert self.udp is not None
        self.listeners.heard(msg, addr[0], time.monotonic(), time.time())
        full = NodeAnnouncement.of(self.describe(addr[0], msg.client_id))
        reply = discovery.reply_within([full, full.lean()], self.udp.last_size)
        if reply is None:  # answering would send more bytes than came: an amplifier
            log.debug("no reply to a discover of %d bytes from %s (clients pad theirs)",
                      self.udp.last_size, addr[0])
            return
        self.udp.send(reply, (addr[0], msg.reply_port))
