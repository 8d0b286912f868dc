"""dispy: distributed and parallel computing with Python.

``cluster = dispy.JobCluster(compute)`` ships ``compute`` to every dispynode it finds;
``cluster.submit(*args)`` returns a :class:`DispyJob` whose ``job()`` gives the result.
"""

from . import config
from ._version import __version__
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
from .log import logger

__all__ = [
    "logger", "DispyJob", "DispyNode", "NodeAllocate", "JobCluster", "SharedJobCluster",
    "DispyNodeAvailInfo",
    "ClusterStatus", "ClusterStats", "config", "__version__", "recover_jobs",
    "Executor", "JobError", "as_completed", "wait", "ALL_COMPLETED", "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
]
