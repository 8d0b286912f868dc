"""The node's availability (free CPU, memory, disk, swap), read with psutil."""

from __future__ import annotations

import psutil


def avail_info(path: str) -> dict[str, float]:
    """``DispyNodeAvailInfo`` fields: cpu and swap are percent *available*."""
    try:
        disk = psutil.disk_usage(path).free
    except OSError:
        disk = 0
    return {
        "cpu": 100.0 - psutil.cpu_percent(interval=None),
        "memory": psutil.virtual_memory().available,
        "disk": disk,
        "swap": 100.0 - psutil.swap_memory().percent,
    }
