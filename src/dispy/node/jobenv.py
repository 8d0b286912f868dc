"""What a computation sees on the node: the names the original dispy bound for it.

They are installed as builtins in the computation's own processes (never in the
daemon), so any shipped function finds them without importing anything.
"""

from __future__ import annotations

import builtins
import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

#: Modules the original's computations could use without importing them.
COMMON_MODULES = (
    "os sys time socket stat multiprocessing threading subprocess traceback tempfile "
    "shutil glob pickle io signal platform copy struct hashlib re errno"
).split()


def preload() -> None:
    """Import the modules ``install`` binds (about 8 ms): a computation host started
    ahead does this while it waits, not while a program waits for its first result."""
    for mod in COMMON_MODULES:
        importlib.import_module(mod)


def install(
    node_name: str,
    node_ip_addr: str,
    job_path: str,
    provisional: Callable[..., int],
    send_file: Callable[..., int],
    shutdown: Callable[[], int],
) -> None:
    """Bind the computation-visible names as builtins of this process."""
    names: dict[str, Any] = {}
    for mod in COMMON_MODULES:
        names[mod] = importlib.import_module(mod)
    names.update(
        dispy_provisional_result=provisional,
        dispy_send_file=send_file,
        dispy_node_name=node_name,
        dispy_node_ip_addr=node_ip_addr,
        dispy_job_path=job_path,
        dispynode_logger=logging.getLogger("dispy.node.computation"),
        dispynode_shutdown=shutdown,
    )
    for key, value in names.items():
        if not hasattr(builtins, key):
            setattr(builtins, key, value)
    os.environ.setdefault("DISPY_JOB_PATH", job_path)
