"""How a failure in user code is logged: one WARNING line with the message and the place it
was raised, and the full traceback at DEBUG on ``loom.traceback``.

A handler, an ``on_start`` or a capability that raises is not a bug of Loom: the supervisor
decides what happens next, and the operator needs the file and line that failed. One line at
WARNING keeps the log readable when a poison event fails a hundred times; the traceback is
there for who asks (``--log-level debug``, or ``--traceback``, which turns ``loom.traceback``
up to DEBUG alone).
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path

__all__ = ["TRACEBACK_LOGGER", "log_user_failure", "where"]

TRACEBACK_LOGGER = "loom.traceback"
"""The logger the tracebacks of user-code failures go to, at DEBUG."""

_tracebacks = logging.getLogger(TRACEBACK_LOGGER)

# Loom's own packages (siblings of this one): the place shown is the innermost frame outside
# them, the user's line rather than the line of Loom that re-raised a tool's error.
_LOOM = tuple(
    str(Path(__file__).resolve().parent.parent / name) + os.sep
    for name in ("runtime", "bridge", "sdk", "cluster", "web")
)


def where(exc: BaseException) -> str:
    """``file:line in function`` of the frame that raised ``exc`` (``""`` if unknown)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    mine = [f for f in frames if not os.path.realpath(f.filename).startswith(_LOOM)]
    last = (mine or frames)[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"


def log_user_failure(logger: logging.Logger, message: str, exc: BaseException) -> None:
    """Log ``message`` (which names the failure) with where ``exc`` was raised at WARNING, and
    its traceback at DEBUG on :data:`TRACEBACK_LOGGER`."""
    place = where(exc)
    logger.warning("%s (at %s)", message, place) if place else logger.warning("%s", message)
    if _tracebacks.isEnabledFor(logging.DEBUG):
        _tracebacks.debug("%s", message, exc_info=(type(exc), exc, exc.__traceback__))
