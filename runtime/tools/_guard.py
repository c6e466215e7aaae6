"""A tool call under its resilience policy: how tool errors read to a policy, and the key.

A call is retried only when it may run twice: its tool is idempotent, or the caller gave it an
idempotency key, which the tool receives (``current_idempotency_key()``; an MCP tool sends it
as ``_meta.idempotencyKey``) so that it can do its effect once per key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from ..resilience import CircuitOpen, Policy, idempotency_key
from ._errors import (
    InvalidToolArguments,
    InvalidToolSchema,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolPermissionDenied,
    ToolTimeout,
)

if TYPE_CHECKING:
    from ._registry import _Entry

__all__ = ["TOOL_OUTCOMES", "guarded"]

# The caller's mistakes: another attempt fails the same way, and the target is not to blame.
_CALLERS: Final = (InvalidToolArguments, InvalidToolSchema, ToolNotFound, ToolPermissionDenied)


class _ToolOutcomes:
    """Every other ``ToolError`` (failed, timed out, unavailable) is the tool's: it counts
    against the breaker and is worth another attempt of an idempotent call."""

    def failure(self, exc: Exception) -> bool:
        return not isinstance(exc, _CALLERS)

    def transient(self, exc: Exception) -> bool:
        return not isinstance(exc, _CALLERS)

    def retry_after(self, exc: Exception) -> float | None:
        return None

    def timed_out(self, seconds: float) -> Exception:
        return ToolTimeout(seconds)

    def refused(self, exc: CircuitOpen) -> Exception:
        # A ToolFailed of its own cause type: it crosses the bridge and reaches the model as is.
        return ToolFailed("CircuitOpen", str(exc))


TOOL_OUTCOMES: Final = _ToolOutcomes()

_NO_POLICY: Final = Policy("")  # a keyed call to a tool without a policy: just the key


async def guarded(
    policy: Policy | None,
    run: Callable[[_Entry, dict[str, Any]], Awaitable[Any]],
    entry: _Entry,
    arguments: dict[str, Any],
    key: str | None,
) -> Any:
    """``run(entry, arguments)`` under ``policy``, with ``key`` visible to the tool."""

    async def attempt() -> Any:
        try:
            return await run(entry, arguments)
        except ToolError:
            raise
        except Exception as exc:
            # Typed here, so the policy can tell a tool's failure from the caller's mistake.
            raise ToolFailed.from_exception(exc, tool=entry.name) from exc

    if key is None:
        assert policy is not None
        return await policy.call(attempt, idempotent=entry.idempotent, outcomes=TOOL_OUTCOMES)
    with idempotency_key(key):
        return await (policy or _NO_POLICY).call(attempt, idempotent=True, outcomes=TOOL_OUTCOMES)
