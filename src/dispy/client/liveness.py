"""When a node is presumed dead, and what happens then.

A broken connection gets a grace period (``RECONNECT_GRACE``, or five pulse intervals
when a cluster asked for pulses) to come back, with its jobs still counted as running
there; after that the node is presumed dead: its jobs run elsewhere or end
(lifecycle.py) and every cluster forgets it (nodesetup.py). A connected node silent for
that long while it runs jobs is cut off the same way. The engine reports broken
connections here and calls ``tick`` twice a second.
"""

from __future__ import annotations

import logging
import time

from .enginehost import EngineHost
from .links import NodeLink

log = logging.getLogger("dispy")

#: How long a lost connection may take to come back before the node is presumed dead.
RECONNECT_GRACE = 10.0


class NodeWatch:
    def __init__(self, engine: EngineHost) -> None:
        self.engine = engine

    def lost(self, link: NodeLink, reason: str) -> None:
        """The connection broke: retry for a while before presuming the node dead."""
        link.state, link.reason = "down", reason
        if self.engine.setups.link_down(link.key) or link.running:
            now = time.monotonic()
            link.lost_at = min(now, link.last_heard)  # silence counts from the last frame
            if now - link.lost_at > self.grace():
                self.dead(link, f"{reason} after {now - link.lost_at:.0f} s of silence")
            else:
                log.info("node %s: %s; reconnecting", link.describe(), reason)
                self.engine.connect(link)
        for fut in link.closing.values():
            if not fut.done():
                fut.set_result(False)

    def retry_later(self, link: NodeLink) -> None:
        """Connecting again failed: the node is dead once its grace is over."""
        if link.lost_at is not None and time.monotonic() - link.lost_at > self.grace():
            self.dead(link, link.reason)
        elif link.lost_at is not None:
            link.retry_at = time.monotonic() + 0.5

    def grace(self) -> float:
        pulses = [cs.pulse_interval for cs in self.engine.clusters.values()
                  if cs.pulse_interval]
        return 5 * min(pulses) if pulses else RECONNECT_GRACE

    def dead(self, link: NodeLink, reason: str) -> None:
        engine = self.engine
        link.lost_at = None
        log.warning("node %s presumed dead (%s); %d running job(s) affected",
                    link.describe(), reason, len(link.running))
        engine.apply(engine.lifecycle.node_lost(link.key, f"{link.describe()} lost: {reason}"))
        link.running.clear()
        engine.dispatch()  # resubmitted jobs go to the other nodes now, not at their next frame
        engine.apply(engine.setups.node_dead(link.key))
        if link.node is not None:
            link.node.busy = 0

    def tick(self, now: float) -> None:
        """Cut silent nodes off, reconnect lost ones (or give up on them), and connect
        to nodes that clusters want but have not met (every ``RETRY_INTERVAL``; one that
        refused or was busy only while jobs wait)."""
        engine = self.engine
        for link in list(engine.links.values()):
            if link.state == "connected":
                limit = self._pulse_limit(link)
                if limit and link.running and now - link.last_heard > limit:
                    if link.conn is not None:  # the engine's read loop ends: ``lost``
                        link.conn.close()
                continue
            if link.state in ("connecting", "relay") or now < link.retry_at:
                continue
            if link.lost_at is not None:
                if now - link.lost_at > self.grace():
                    self.dead(link, link.reason)
                else:
                    engine.connect(link)
            elif any(engine.wants(cs, link.ip, link.port) is not None
                     and (cs.jobs or link.state == "down")
                     and engine.setups.state(link.key, cs.cid) is None
                     and cs.cid not in engine.lifecycle.closing
                     for cs in engine.clusters.values() if cs.profile == link.profile):
                # a node that was not up yet joins when it is (wait_nodes, status()), not
                # only once jobs wait; one that refused (a wrong secret) or was busy is
                # asked again only for jobs: its warning would repeat every half minute
                engine.connect(link)

    def _pulse_limit(self, link: NodeLink) -> float | None:
        pulses = [cs.pulse_interval for cs in self.engine.clusters.values()
                  if cs.pulse_interval and self.engine.setups.known(link.key, cs.cid)]
        return 5 * min(pulses) if pulses else None
