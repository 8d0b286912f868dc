"""dispynetrelay's sockets: a thin shell that feeds datagrams to ``RelayState``."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from .. import __version__
from ..wire import auth, discovery, netif
from ..wire.discoverymsg import Discover, DiscoveryMessage, NodeAnnouncement
from .forward import RelayState, Send
from .options import RelayOptions

log = logging.getLogger("dispy.relay")


class RelayDaemon:
    """Listens for clients' requests on ``relay_port`` and for node announcements on
    ``scheduler_port``; re-broadcasts requests from an ephemeral port, where the
    nodes' answers arrive."""

    def __init__(self, opts: RelayOptions) -> None:
        self.opts = opts
        self.ifs = netif.select(opts.ip_addrs)
        self.lan = [i for i in self.ifs if not i.loopback]  # loopback is nobody's network
        if not self.lan:
            raise ValueError("no network interface to relay to (only loopback is up)")
        self.stop_event = asyncio.Event()
        self.state = RelayState(
            key=auth.derive_key(opts.secret) if opts.secret else None,
            local=lambda ip: any(i.contains(ip) for i in self.lan),
            name=socket.gethostname(), node_port=opts.node_port,
            relay_port=opts.relay_port)
        self.requests: discovery.DiscoveryProtocol | None = None
        self.out: discovery.DiscoveryProtocol | None = None
        self.endpoints: list[discovery.DiscoveryProtocol] = []

    async def start(self) -> None:
        opts = self.opts
        for port, reuse, what in ((opts.relay_port, False, "--relay_port"),
                                  (opts.scheduler_port, True, "--scheduler_port")):
            try:
                proto = await discovery.open_endpoint(
                    port, reuse, discovery.records(self._on_datagram, f"relay {what}"),
                    f"relay {what}", self.lan)
            except OSError as exc:
                await self.stop()
                raise SystemExit(f"dispynetrelay: cannot use UDP port {port} ({what}):"
                                 f" {exc.strerror}") from None
            self.endpoints.append(proto)
            if what == "--relay_port":
                self.requests = proto
        self.out = await discovery.open_endpoint(
            0, False, discovery.records(self._on_datagram, "relay"), "relay", self.lan)
        self.endpoints.append(self.out)
        self.state.reply_port = self.out.local_port()
        for host in opts.scheduler_nodes:
            try:
                self.state.fixed.append((netif.resolve(host), opts.scheduler_port))
            except OSError as exc:
                log.warning("cannot resolve --scheduler_node %s: %s", host, exc)
        log.info("dispynetrelay %s: relaying requests on UDP port %d to nodes on port %d"
                 " of %s%s", __version__, opts.relay_port, opts.node_port,
                 ", ".join(f"{i.address}/{i.netmask}" for i in self.lan),
                 " (multicast)" if opts.ipv4_udp_multicast else "")
        if not opts.secret:
            log.warning("dispynetrelay runs without a secret: it relays anyone's requests"
                        " (rate-limited); use -s/--secret with the nodes' secret")
        if self.state.fixed:  # ask once now, so the fixed targets learn of the nodes
            self._send(Send(discovery.discover(self.state.reply_port, "dispynetrelay"),
                            None, opts.node_port, rebroadcast=True))

    def _on_datagram(self, msg: DiscoveryMessage, addr: tuple) -> None:
        now = time.time()  # one clock: signed requests carry the wall clock
        if isinstance(msg, Discover):
            assert self.requests is not None
            sends, why = self.state.on_discover(msg, addr, now,
                                                self.requests.last_size)
            if why:
                log.info("not relaying a request from %s: %s", addr[0], why)
            elif sends:
                log.debug("request from %s:%s (%s) relayed", addr[0], msg.reply_port,
                          msg.client_id)
        elif isinstance(msg, NodeAnnouncement):
            sends = self.state.on_node(msg, addr, now)
            if sends:
                log.debug("node %s:%s forwarded to %d requester(s)", msg.ip_addr,
                          msg.port, len(sends))
        else:
            return
        for send in sends:
            self._send(send)

    def _send(self, send: Send) -> None:
        if send.rebroadcast:
            assert self.out is not None
            discovery.send_to_lan(self.out, send.msg, send.port, self.lan,
                                  self.opts.ipv4_udp_multicast)
        elif send.ip is not None and self.out is not None:
            self.out.send(send.msg, (send.ip, send.port))

    def status_text(self) -> str:
        reqs = sorted(self.state.requesters.values(), key=lambda r: -r.last)
        now = time.time()
        lines = [f"dispynetrelay: {len(reqs)} requester(s)"]
        lines += [f"  {r.ip}:{r.port} ({r.client_id}), last asked {now - r.last:.0f} s ago"
                  for r in reqs]
        return "\n".join(lines)

    def request_stop(self) -> None:
        self.stop_event.set()

    async def stop(self) -> None:
        for proto in self.endpoints:
            proto.close()
