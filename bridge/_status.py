"""The one place where Loom's errors meet gRPC status codes and tool statuses.

Both directions live here: the server turns a :class:`LoomError` into a status code (a call's
status, an ``Error`` frame's ``code``, a rejection's ``code``) and a ``ToolError`` into a
``ToolResult``; a client turns them back. Some modules of ``bridge/`` still name a code
directly (``_auth.py``'s ``UNAUTHENTICATED``, ``_server_session.py``'s frame errors and
publish rejections, ``_server.py``'s ``UNAVAILABLE`` at shutdown); they use the code of the
class they mean in the table below, and a code outside it (``INTERNAL`` for a frame the
server failed to handle) reads back as a :class:`StatusError`.

The mapping is symmetric. A status carries a code and a message and nothing else (the
``loom.v1`` wire has no field for a class), so each code the server emits stands for exactly
one error class, and a client rebuilds that class with the message as sent:

- ``UNAUTHENTICATED``: :class:`Unauthenticated`
- ``PERMISSION_DENIED``: :class:`WrongAgent`
- ``FAILED_PRECONDITION``: :class:`NotRegistered`
- ``UNIMPLEMENTED``: :class:`~loom.runtime.DurabilityUnavailable` (durability is not enabled
  on this server: gRPC's "not supported/enabled in this service"; FAILED_PRECONDITION is
  ``NotRegistered``'s)
- ``ALREADY_EXISTS``: :class:`~loom.runtime.AgentExists`
- ``RESOURCE_EXHAUSTED``: :class:`LimitExceeded`
- ``INVALID_ARGUMENT``: :class:`~loom.runtime.InvalidArgument`
- ``UNAVAILABLE``: :class:`~loom.runtime.BusClosed`
- ``DEADLINE_EXCEEDED``: :class:`~loom.runtime.DeadlineExceeded`

A subclass crosses as the class above it: an ``InvalidTopic``, a ``WireError`` or a
``HandshakeError`` arrives as an ``InvalidArgument``, so ``except InvalidArgument`` catches it
on both sides; a ``DurableUnavailable`` (the durable log's server did not answer) as a
``DeadlineExceeded`` (``AdminClient``'s durable calls rebuild the ``DurableUnavailable``).
Fields the message does not carry are empty on the client (the ``agent_id`` of a rebuilt
``AgentExists`` is ``""``). Any other code (``UNKNOWN``,
``INTERNAL``...) is a :class:`StatusError`. Tool errors cross in a
``ToolResult`` instead (``outcome_from_error`` / ``error_from_outcome``), each kind as its own
status, the message kept.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import grpc

from loom.runtime import (
    AgentExists,
    BusClosed,
    DeadlineExceeded,
    DurabilityUnavailable,
    InvalidArgument,
    LoomError,
)
from loom.runtime.tools import (
    CallDepthExceeded,
    InvalidToolArguments,
    ScopeUnavailable,
    ToolCallRefused,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolPermissionDenied,
    ToolTimeout,
)

from ._errors import (
    AGENT_UNRESPONSIVE,
    AgentUnresponsive,
    BridgeError,
    LimitExceeded,
    NotRegistered,
    Unauthenticated,
    WrongAgent,
)
from ._wire_types import ToolCallOutcome, ToolErrorInfo, ToolStatus

__all__ = [
    "StatusError",
    "code_name",
    "error_from_outcome",
    "error_from_status",
    "failed_outcome",
    "outcome_from_error",
    "status_of",
    "tool_error_from_status",
]

_Code = grpc.StatusCode

# The wire's error classes: one code per class and one class per code. The server reports an
# error with the code of the first class here it is an instance of (subclasses before their
# bases); a client rebuilds that class from the code.
_WIRE: tuple[tuple[type[LoomError], grpc.StatusCode], ...] = (
    (Unauthenticated, _Code.UNAUTHENTICATED),
    (WrongAgent, _Code.PERMISSION_DENIED),
    (NotRegistered, _Code.FAILED_PRECONDITION),
    (DurabilityUnavailable, _Code.UNIMPLEMENTED),
    (AgentExists, _Code.ALREADY_EXISTS),
    (LimitExceeded, _Code.RESOURCE_EXHAUSTED),
    (BusClosed, _Code.UNAVAILABLE),
    (DeadlineExceeded, _Code.DEADLINE_EXCEEDED),
    (InvalidArgument, _Code.INVALID_ARGUMENT),
)
_CLASS_OF: dict[str, type[LoomError]] = {code.name: kind for kind, code in _WIRE}
assert len(_CLASS_OF) == len(_WIRE), "two wire classes share a status code"

# How a client makes an instance of a class whose constructor wants structured fields; the
# message is then set to the text the server sent.
_BLANK: dict[type[LoomError], Callable[[], LoomError]] = {
    AgentExists: lambda: AgentExists("", ""),
    NotRegistered: lambda: NotRegistered(""),
    DurabilityUnavailable: lambda: DurabilityUnavailable(""),
    LimitExceeded: lambda: LimitExceeded("", 0, ""),
}


def status_of(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code that reports ``exc``: its wire class's code, ``UNKNOWN`` for a
    Loom error without one, ``INTERNAL`` for an unexpected error."""
    for kind, code in _WIRE:
        if isinstance(exc, kind):
            return code
    return _Code.UNKNOWN if isinstance(exc, LoomError) else _Code.INTERNAL


def code_name(code: grpc.StatusCode) -> str:
    """The code's canonical name (``"INVALID_ARGUMENT"``), as ``Error.code`` and rejections
    carry it."""
    return code.name


class StatusError(BridgeError):
    """A gRPC status that no Loom error class stands for (``UNKNOWN``, ``INTERNAL``, ...).

    Attributes:
        code: the status code's name, e.g. ``"INTERNAL"``.
        details: the server's message.
    """

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


def error_from_status(code: grpc.StatusCode | str, details: str) -> LoomError:
    """The Loom error a client raises for a failed call's status (or an ``Error`` frame): the
    code's wire class, its message ``details`` as sent (see the module's table)."""
    name = code.name if isinstance(code, grpc.StatusCode) else code
    kind = _CLASS_OF.get(name)
    if kind is None:
        return StatusError(name, details)
    blank = _BLANK.get(kind)
    exc = kind(details) if blank is None else blank()
    exc.args = (details,)  # the text as the server wrote it, not rebuilt from empty fields
    return exc


def tool_error_from_status(
    code: grpc.StatusCode, details: str, *, tool: str, timeout: float | None
) -> ToolError:
    """The error a failed tool-call RPC (``ForwardToolCall``, ``ToolService.Call``) means for
    its caller: a passed deadline is a :class:`ToolTimeout`, refused credentials a
    :class:`ToolPermissionDenied`, ``NOT_FOUND`` a :class:`ToolNotFound`, ``INVALID_ARGUMENT``
    (a malformed call) :class:`InvalidToolArguments`, anything else a :class:`ToolFailed`
    naming the status (``UNAVAILABLE``: the server went away)."""
    details = details or code.name
    if code is _Code.DEADLINE_EXCEEDED:
        return ToolTimeout(timeout if timeout is not None else 0.0, tool=tool)
    if code in (_Code.UNAUTHENTICATED, _Code.PERMISSION_DENIED):
        return ToolPermissionDenied(f"{code.name}: {details}", tool=tool)
    if code is _Code.NOT_FOUND:
        return ToolNotFound(tool)
    if code is _Code.INVALID_ARGUMENT:
        return InvalidToolArguments(details, tool=tool)
    return ToolFailed(code.name, details, tool=tool)


# ------------------------------------------------------------------ tool calls


def _path(path: tuple[str | int, ...]) -> str:
    """A JSON Pointer (RFC 6901) to where in the arguments the problem is."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def outcome_from_error(call_id: str, exc: ToolError) -> ToolCallOutcome:
    """The ``ToolResult`` that reports a failed call.

    ``ToolNotFound`` -> ``NOT_FOUND``; ``InvalidToolArguments`` -> ``INVALID_ARGUMENTS``
    (``details`` has ``path``, a JSON Pointer); ``ToolTimeout`` -> ``TIMEOUT`` (``details`` has
    ``timeout_s``); anything else -> ``ERROR``, with ``code`` ``PERMISSION_DENIED`` for a
    refusal by policy, ``AGENT_UNRESPONSIVE`` for an agent that turned stale (``details``
    has ``agent_id`` and ``stale_after_s``), ``ToolCallRefused`` / ``CallDepthExceeded`` for
    a call refused by a cap of its turn (``details`` has ``budget``, ``limit`` and, for the
    depth, ``depth``; :func:`error_from_outcome` rebuilds them) and the failure's type name
    (``ToolFailed.cause_type``) otherwise.
    ``details["tool"]`` names the tool when known.
    """
    details = {"tool": exc.tool} if exc.tool else {}
    message = str(exc)
    match exc:
        case ToolNotFound():
            status, code = ToolStatus.NOT_FOUND, "NOT_FOUND"
        case InvalidToolArguments():
            status, code = ToolStatus.INVALID_ARGUMENTS, "INVALID_ARGUMENTS"
            details["path"] = _path(exc.path)
        case ToolTimeout():
            status, code = ToolStatus.TIMEOUT, "TIMEOUT"
            details["timeout_s"] = f"{exc.timeout:g}"
        case ToolPermissionDenied():
            status, code = ToolStatus.ERROR, "PERMISSION_DENIED"
        case AgentUnresponsive():
            status, code = ToolStatus.ERROR, AGENT_UNRESPONSIVE
            details["agent_id"] = exc.agent_id
            details["stale_after_s"] = f"{exc.stale_after_s:g}"
        case ScopeUnavailable():
            # Before ToolCallRefused (its base): the authority over the call's scope could
            # not be asked; no cap was reached.
            status, code = ToolStatus.ERROR, "ScopeUnavailable"
            details["why"] = exc.why
        case CallDepthExceeded():
            status, code = ToolStatus.ERROR, "CallDepthExceeded"
            details.update(budget=exc.budget, limit=str(exc.limit), depth=str(exc.depth))
        case ToolCallRefused():
            status, code = ToolStatus.ERROR, "ToolCallRefused"
            details.update(budget=exc.budget, limit=str(exc.limit))
            if exc.owners:  # the caller's turn's own call (docs/guardrails.md)
                details["owners"] = "1"
        case ToolFailed():
            status, code = ToolStatus.ERROR, exc.cause_type
        case _:
            status, code = ToolStatus.ERROR, type(exc).__name__
    return ToolCallOutcome(
        id=call_id,
        status=status,
        error=ToolErrorInfo(code=code, message=message, details=details),
    )


def _pointer_path(pointer: str) -> tuple[str | int, ...]:
    """The path a JSON Pointer names (an all-digit part taken for an index)."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    return tuple(int(p) if p.isdigit() else p for p in parts)


def _after(text: str, head: str) -> str:
    """``text`` after ``head`` and the ``": "`` that ends it, or all of it."""
    if text.startswith(head):
        _, sep, rest = text[len(head) :].partition(": ")
        if sep:
            return rest
    return text


def error_from_outcome(outcome: ToolCallOutcome, *, tool: str, timeout: float) -> ToolError:
    """The ``ToolError`` a failed ``ToolResult`` stands for (``outcome.status`` is not OK).

    The kind the status names, with the message as sent: ``str()`` of the rebuilt error is
    ``error.message`` (the tool's name is not put before it a second time), so a failure
    that crosses several hops reads the same at the end as where it happened.

    Args:
        outcome: the result.
        tool: the tool's name.
        timeout: the call's timeout in seconds, reported when the result says ``TIMEOUT``
            without ``details["timeout_s"]``.
    """
    err = outcome.error or ToolErrorInfo()
    message = err.message or err.code or outcome.status.name.lower()
    # ToolError's str() is "<tool>: <text>"; the text is what the error itself holds.
    prefix = f"{tool}: "
    text = message[len(prefix) :] if message.startswith(prefix) else message
    exc: ToolError
    match outcome.status:
        case ToolStatus.NOT_FOUND:
            exc = ToolNotFound(tool)
        case ToolStatus.INVALID_ARGUMENTS:
            path = _pointer_path(err.details.get("path", ""))
            exc = InvalidToolArguments(_after(text, "invalid arguments"), path=path, tool=tool)
        case ToolStatus.TIMEOUT:
            with contextlib.suppress(ValueError):
                timeout = float(err.details.get("timeout_s", timeout))
            exc = ToolTimeout(timeout if math.isfinite(timeout) else math.inf, tool=tool)
        case _ if err.code == "PERMISSION_DENIED":
            exc = ToolPermissionDenied(text, tool=tool)
        case _ if err.code == "ScopeUnavailable":
            exc = ScopeUnavailable(err.details.get("why", text), tool=tool)
        case _ if err.code in ("CallDepthExceeded", "ToolCallRefused") and _int(
            err.details.get("limit")
        ):
            # A cap of the turn the call was made for, refused where the call went on.
            limit = _int(err.details.get("limit")) or 0
            if err.code == "CallDepthExceeded":
                exc = CallDepthExceeded(_int(err.details.get("depth")) or 0, limit, tool=tool)
            else:
                exc = ToolCallRefused(
                    err.details.get("budget", ""),
                    limit,
                    tool=tool,
                    owners=err.details.get("owners") == "1",
                )
        case _ if err.code == AGENT_UNRESPONSIVE:
            stale_after_s = 0.0
            with contextlib.suppress(ValueError):
                stale_after_s = float(err.details.get("stale_after_s", "0"))
            exc = AgentUnresponsive(err.details.get("agent_id", ""), stale_after_s, tool=tool)
            exc.cause_message = _after(text, f"failed: {AGENT_UNRESPONSIVE}")
        case _:
            cause = err.code or "ToolError"
            exc = ToolFailed(cause, _after(text, f"failed: {cause}"), tool=tool)
    exc.args = (text,)
    return exc


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def failed_outcome(call_id: str, status: ToolStatus, code: str, message: str) -> ToolCallOutcome:
    """A call's outcome that is not OK: its status, ``error.code`` and message."""
    return ToolCallOutcome(
        id=call_id, status=status, error=ToolErrorInfo(code=code, message=message)
    )
