"""What the engine's parts (control.py, liveness.py) need of the engine (engine.py):
one typed view, so neither reaches into the engine's other attributes."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any, Protocol

from ..scheduling import SchedulerCore
from ..scheduling.lifecycle import Instruction, JobLifecycle
from ..scheduling.nodesetup import NodeSetups, Out
from .clusterstate import ClusterState
from .finder import NodeFinder
from .links import NodeLink
from .sink import JobSink


class EngineHost(Protocol):
    clusters: dict[str, Any]
    links: dict[Hashable, NodeLink]
    core: SchedulerCore
    lifecycle: JobLifecycle
    setups: NodeSetups
    finder: NodeFinder
    sink: JobSink
    msg_timeout: float

    def wants(self, cs: ClusterState, ip: str, port: int) -> Any: ...

    def allocation(self, cs: ClusterState, link: NodeLink) -> tuple[Any, int]: ...

    def connect(self, link: NodeLink) -> asyncio.Task: ...

    def consider(self, link: NodeLink, cs: ClusterState) -> None: ...

    def dispatch(self) -> bool: ...

    def apply(self, out: list[Instruction] | list[Out]) -> None: ...

    def forget_lanes(self, cid: str) -> None: ...

    async def set_up(self, link: NodeLink, cs: ClusterState, alloc: Any) -> None: ...
