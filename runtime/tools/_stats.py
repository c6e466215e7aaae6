"""Frozen records returned by :meth:`ToolRegistry.statistics` and :meth:`ToolRegistry.specs`."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["ToolFailures", "ToolSpec", "ToolStats"]


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a model (or a remote peer) is told about a tool.

    Attributes:
        name: the tool's registered name.
        description: what it does, for the model.
        parameters_schema: the JSON Schema of its arguments object.
    """

    name: str
    description: str
    parameters_schema: dict[str, Any]


class ToolFailures(msgspec.Struct, frozen=True, kw_only=True):
    """Failed calls of one tool, by kind.

    Attributes:
        invalid_arguments: refused before the tool ran (or by the tool) as
            :class:`InvalidToolArguments`.
        timeouts: ended by their timeout (:class:`ToolTimeout`).
        permission_denied: refused by policy (:class:`ToolPermissionDenied`).
        failed: any other failure (:class:`ToolFailed` and other ``ToolError``\\ s).
    """

    invalid_arguments: int = 0
    timeouts: int = 0
    permission_denied: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.invalid_arguments + self.timeouts + self.permission_denied + self.failed


class ToolStats(msgspec.Struct, frozen=True, kw_only=True):
    """One registered tool's counters since it was registered.

    ``calls == succeeded + failures.total + cancelled + waiting + in_flight`` holds at every
    moment.

    Attributes:
        name: the tool's name.
        calls: calls made to it, valid or not.
        succeeded: calls that returned a result.
        failures: calls that raised, by kind.
        cancelled: calls cancelled from outside (not by their timeout).
        waiting: calls waiting for a slot of the concurrency limit now.
        in_flight: calls running in the tool now.
        max_concurrency: the tool's concurrency limit (``None``: unlimited).
        timeout: the tool's default timeout in seconds (``math.inf``: none).
    """

    name: str
    calls: int
    succeeded: int
    failures: ToolFailures
    cancelled: int
    waiting: int
    in_flight: int
    max_concurrency: int | None
    timeout: float
