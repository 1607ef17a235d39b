"""Structured logging: JSON lines on stdout (or a console renderer for humans).

The sidecar's own lines come from structlog; the standard library's records (aiohttp.server,
aiohttp.access, asyncio, Python warnings) are rendered by the same processors into the same
stream, so that every line of the process's log is one JSON object.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
}


class _StructlogHandler(logging.Handler):
    """Writes formatted stdlib records through a structlog ``PrintLogger``.

    The ``PrintLogger`` takes the same per-stream lock as the sidecar's own loggers, so a record
    logged from another thread never interleaves with a structlog line.
    """

    def __init__(self, printer: structlog.PrintLogger) -> None:
        super().__init__()
        self._printer = printer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._printer.msg(self.format(record))
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def configure_logging(
    fmt: LogFormat = "json", stream: TextIO | None = None, level: LogLevel = "info"
) -> None:
    """Configure structlog and the stdlib root logger once per process, both at ``level``."""
    out = stream or sys.stdout
    renderer: structlog.typing.Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    handler = _StructlogHandler(structlog.PrintLogger(out))
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,  # "logger": "aiohttp.server"
            stamp,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # a traceback is one escaped string field
            renderer,
        ],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    logging.captureWarnings(True)  # warnings.warn(...) becomes a "py.warnings" record


def get_logger(component: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=component)
    return logger
