"""Why a cluster's jobs wait: the one warning a user sees instead of a silent hang.

Pure: given the cluster and what the engine knows of nodes, the text to log. The engine
(engine.py) decides when (``config.FirstStallReport``, then every
``config.StallReportInterval`` seconds while no node is usable).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..wire import netif

if TYPE_CHECKING:
    from .clusterstate import ClusterState


def stall_message(cs: ClusterState, known: Iterable[tuple[str, str]],
                  unmatched: Iterable[tuple[str, int]]) -> str:
    """``known``: (node, why it does not run jobs of ``cs``) for the nodes ``cs`` wants;
    ``unmatched``: (ip, port) of nodes that answered but match none of its patterns."""
    known = list(known)
    waiting = f"{cs.name!r}: {len(cs.jobs)} job(s) waiting;"
    if not known:
        targets = ", ".join(a.host for a in cs.allocs)
        others = sorted(netif.host_port(ip, port) for ip, port in unmatched)
        if others:
            return (f"{waiting} {len(others)} node(s) answered but match none of"
                    f" nodes=[{targets}]: {', '.join(others[:20])}")
        return f"{waiting} no node answered at all (looked for: {targets})"
    lines = []
    for node, why in known:
        lines.append(f"  {node}: {why}")
    return f"{waiting} no node is usable:\n" + "\n".join(lines)
