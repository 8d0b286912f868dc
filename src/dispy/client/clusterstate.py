"""What the engine needs of a cluster's record: JobCluster's (client/cluster.py) and the
scheduler's ``RemoteCluster`` both provide it."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Protocol

from .journal import Journal
from .links import Profile
from .nodes import DispyNode
from .shipping import FileSpec, Package


class ClusterState(Protocol):
    """Touched on the engine thread only."""

    cid: str
    name: str
    created: float
    stall_reported: float
    #: set by the engine when the cluster is added: a Journal (the scheduler: a NullJournal)
    journal: Journal | Any

    @property
    def cluster(self) -> Any: ...  # what a NodeAllocate's allocate() is given

    @property
    def jobs(self) -> MutableMapping[str, Any]: ...  # DispyJob (the scheduler: RelayedJob)

    @property
    def nodes(self) -> dict[tuple, DispyNode]: ...

    @property
    def node_cpus(self) -> dict[tuple, int]: ...

    @property
    def allocs(self) -> list[Any]: ...

    @property
    def package(self) -> Package: ...

    @property
    def profile(self) -> Profile: ...

    @property
    def callback(self) -> Any: ...

    @property
    def cluster_status(self) -> Any: ...

    @property
    def reentrant(self) -> bool: ...

    @property
    def exclusive(self) -> bool: ...

    @property
    def pulse_interval(self) -> float | None: ...

    @property
    def ping_interval(self) -> float | None: ...

    @property
    def dest_path(self) -> str | None: ...

    @property
    def cleanup(self) -> Any: ...

    @property
    def recover_file(self) -> str | None: ...

    def node_files(self, alloc: Any) -> list[FileSpec]: ...

    def job_finished(self) -> None: ...

