"""``dispy.logger``: stdlib logging with the original's interface (levels as attributes)."""

from __future__ import annotations

import logging
import sys


class DispyLogger(logging.Logger):
    """A stdlib logger that also answers ``logger.DEBUG`` ... ``logger.CRITICAL``."""

    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARN = WARNING = logging.WARNING
    ERROR = logging.ERROR
    CRITICAL = FATAL = logging.CRITICAL


def _make() -> DispyLogger:
    old = logging.getLoggerClass()
    logging.setLoggerClass(DispyLogger)
    try:
        lg = logging.getLogger("dispy")
    finally:
        logging.setLoggerClass(old)
    if not isinstance(lg, DispyLogger):  # created earlier by someone else
        lg.__class__ = DispyLogger
    if not lg.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s - %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
        lg.addHandler(handler)
    if lg.level == logging.NOTSET:
        lg.setLevel(logging.WARNING)
    return lg  # type: ignore[return-value]


logger = _make()


def daemon_logging(debug: bool) -> None:
    """Logging for dispynode and dispyscheduler: everything through the root handler."""
    level = logging.DEBUG if debug else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s - %(message)s")
    logger.handlers.clear()  # the root handler prints; no second copy
    logger.setLevel(level)
