"""dispy: distributed and parallel computing with Python.

``cluster = dispy.JobCluster(compute)`` ships ``compute`` to every dispynode it finds;
``cluster.submit(*args)`` returns a :class:`DispyJob` whose ``job()`` gives the result.

The client's classes load on first use of each: a node's computation hosts and job
processes import ``dispy.node...`` and must not pay for the client (it was 90% of a
host's start), and a program pays only for what it uses.
"""

from __future__ import annotations

import atexit as _atexit
import sys as _sys
from typing import TYPE_CHECKING, Any

from . import config
from ._version import __version__
from .log import logger

if TYPE_CHECKING:
    from .client.cluster import JobCluster
    from .client.executor import Executor
    from .client.futures import (
        ALL_COMPLETED,
        FIRST_COMPLETED,
        FIRST_EXCEPTION,
        JobError,
        as_completed,
        wait,
    )
    from .client.job import DispyJob
    from .client.nodes import ClusterStatus, DispyNode, DispyNodeAvailInfo, NodeAllocate
    from .client.recover import recover_jobs
    from .client.shared import SharedJobCluster
    from .client.status import ClusterStats
    from .sshstart import SSHNodes

__all__ = [
    "logger", "DispyJob", "DispyNode", "NodeAllocate", "JobCluster", "SharedJobCluster",
    "DispyNodeAvailInfo",
    "ClusterStatus", "ClusterStats", "config", "__version__", "recover_jobs",
    "Executor", "JobError", "as_completed", "wait", "ALL_COMPLETED", "FIRST_COMPLETED",
    "FIRST_EXCEPTION", "SSHNodes",
]


#: where each of the client's names is defined, imported on its first use: a program
#: that uses JobCluster does not import SSHNodes' argparse or dispyscheduler's link
_HOMES = {
    "JobCluster": "client.cluster", "Executor": "client.executor",
    "ALL_COMPLETED": "client.futures", "FIRST_COMPLETED": "client.futures",
    "FIRST_EXCEPTION": "client.futures", "JobError": "client.futures",
    "as_completed": "client.futures", "wait": "client.futures", "DispyJob": "client.job",
    "ClusterStatus": "client.nodes", "DispyNode": "client.nodes",
    "DispyNodeAvailInfo": "client.nodes", "NodeAllocate": "client.nodes",
    "recover_jobs": "client.recover", "SharedJobCluster": "client.shared",
    "ClusterStats": "client.status", "SSHNodes": "sshstart",
}


def _load(name: str) -> Any:
    """``name``, its module imported now."""
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def _at_exit() -> None:
    """Registered by ``import dispy``, before the program registers its own exit
    handlers, so it runs after them (they may still close their clusters): ends the
    client engine's loop thread before the interpreter finalizes (client/engine.py)."""
    engine = _sys.modules.get("dispy.client.engine")
    if engine is not None:
        engine.stop_program_engines()


_atexit.register(_at_exit)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return _load(name)
    raise AttributeError(f"module 'dispy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
