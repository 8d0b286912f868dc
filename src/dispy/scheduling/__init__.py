"""The one scheduling core, shared by JobCluster's embedded scheduler and dispyscheduler."""

from .core import SchedulerCore

__all__ = ["SchedulerCore"]
