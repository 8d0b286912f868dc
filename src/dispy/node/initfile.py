"""dispynode ``--init FILE`` (a 4.15 option): code run before every computation.

The original ran the file's ``init()`` once in a child of dispynode and gave the names
it made global to every computation. Here no user code runs in dispynode itself, so each
computation's own process runs ``init()`` before ``setup`` (and ``close()`` when the
computation ends): the names ``init()`` adds to the file's globals become globals of
the computation (builtins of that process), and those holding a str or int also
environment variables of program computations.
"""

from __future__ import annotations

import builtins
import os
import runpy
from collections.abc import Callable
from typing import Any

#: Environment variable by which dispynode names the file to its computation hosts.
ENV = "DISPY_NODE_INIT_FILE"


def run(path: str) -> Callable[[], Any] | None:
    """Run ``path``'s ``init()``; install what it added; return its ``close`` (or None).

    Raises RuntimeError when init() returns something other than 0 (or None)."""
    namespace = runpy.run_path(path, run_name="dispynode_init")
    before = set(namespace)
    init = namespace.get("init")
    if callable(init):
        ret = init()
        if ret not in (0, None):
            raise RuntimeError(f"--init {path}: init() returned {ret!r}, not 0")
        namespace = init.__globals__  # run_path returned a copy; init() set the module's
    for name, value in namespace.items():
        if name in before or name.startswith("__"):
            continue
        setattr(builtins, name, value)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            os.environ[name] = str(value)
    close = namespace.get("close")
    return close if callable(close) else None
