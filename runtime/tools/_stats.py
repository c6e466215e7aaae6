"""Frozen records: a tool's description (:class:`ToolSpec`, from :meth:`ToolRegistry.specs`)
and its counters (from :meth:`ToolRegistry.statistics`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .._errors import InvalidArgument
from ._tool import JSONObject, Tool

__all__ = ["ToolFailures", "ToolSpec", "ToolStats"]

_EMPTY_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a model (or a remote peer) is told about a tool: the description part of a
    :class:`Tool`, without the way to call it.

    The one description of a tool everywhere: :meth:`ToolRegistry.specs`, ``ctx.list_tools``
    and the ``tools`` of an LLM :class:`~loom.runtime.llm.CompletionRequest`.

    Attributes:
        name: the tool's (dotted) name, e.g. ``fs.read``; LLM providers map it to a name their
            API accepts.
        description: what it does, for the model.
        parameters_schema: the JSON Schema of its arguments object.

    Raises:
        InvalidArgument: the name is empty, or the schema is not of type ``object``.
    """

    name: str
    description: str = ""
    parameters_schema: JSONObject = msgspec.field(default_factory=lambda: dict(_EMPTY_SCHEMA))

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgument("a tool needs a non-empty name")
        if self.parameters_schema.get("type", "object") != "object":
            raise InvalidArgument(
                f"tool {self.name!r}: parameters_schema must be a JSON Schema of type 'object'"
            )

    @classmethod
    def from_tool(cls, tool: Tool) -> ToolSpec:
        """The spec of ``tool`` (an empty schema becomes the schema of an empty object)."""
        return cls(
            name=tool.name,
            description=tool.description,
            parameters_schema=dict(tool.parameters_schema) or dict(_EMPTY_SCHEMA),
        )


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
