"""The log of a Loom process (``loom serve``, ``loom run``'s agents, ``Agent.run()``): one
handler on the root logger, writing text or JSON lines to stderr.

``text``: ``2026-12-04 16:50:01.123 INFO loom.bridge.client: connected to ... as upperer``.
``json``: one object per line, ``{"ts": ..., "level": ..., "logger": ..., "message": ...}``,
plus ``"exc"`` with the traceback when the record carries one. Either way a record is one
line per message (a traceback, at DEBUG, is the one exception in text form).

At ``debug`` the loggers of grpc and asyncio stay at WARNING, so what shows is Loom's own
decisions (registrations, refusals, tool calls with their outcome and duration), not the
event loop's chatter. ``traceback=True`` turns on the tracebacks of failures in user code
alone (``loom.traceback``, see ``loom.runtime.lowlevel.log_user_failure``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

import msgspec

from loom.runtime import ConfigError
from loom.runtime.lowlevel import TRACEBACK_LOGGER

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "configure_logging"]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")

_encoder = msgspec.json.Encoder()
_NOISY = ("grpc", "asyncio")  # below WARNING they say nothing an operator needs


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) + (
        f".{int(created * 1000) % 1000:03d}"
    )


class _TextFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message`` (and ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encoder.encode(entry).decode()


def configure_logging(
    level: str = "info",
    fmt: str = "text",
    *,
    stream: TextIO | None = None,
    traceback: bool = False,
    timestamps: bool = True,
) -> None:
    """Send every log record at ``level`` and above to ``stream`` (stderr), as ``fmt``.

    Replaces the root logger's handlers (this is a process's outermost layer speaking).
    ``timestamps=False`` leaves the time out of text lines (``loom run`` stamps its agents'
    lines itself).

    Raises:
        ConfigError: an unknown level or format.
    """
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        line = "%(levelname)s %(name)s: %(message)s"
        handler.setFormatter(_TextFormatter("%(asctime)s " + line if timestamps else line))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    if traceback:
        logging.getLogger(TRACEBACK_LOGGER).setLevel(logging.DEBUG)
