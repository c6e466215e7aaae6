"""Tools that run only when an approval gate has ruled on the call.

A server that asks a human before ``fs.write`` runs (``docs/guardrails.md``) must not let
the same tool be called around the gate: by ``ctx.tool``, ``loom call`` or an agent in another
process (``ForwardToolCall``), where no turn can wait. :class:`NeedsApproval` wraps such a
tool: its calls run only inside :func:`approval_ruled`, which the loop enters for each call
its :class:`~loom.runtime.cognition.ApprovalGate` let through (approved by a person, or needing
no approval by the agent's policy); any other call is refused with
:class:`~loom.runtime.tools.ToolPermissionDenied`, having done nothing.

The ruling travels as a context variable, so it holds for the call's own task (and what it
starts) and never leaks to another call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ._errors import ToolPermissionDenied
from ._tool import JSONObject, Tool

__all__ = ["NeedsApproval", "approval_ruled"]

_RULED: ContextVar[bool] = ContextVar("loom_approval_ruled", default=False)


@contextmanager
def approval_ruled() -> Iterator[None]:
    """Within: the tool calls made were ruled on by an approval gate."""
    token = _RULED.set(True)
    try:
        yield
    finally:
        _RULED.reset(token)


class NeedsApproval:
    """``tool``, callable only from a turn whose approval gate ruled on the call.

    Args:
        tool: the tool to guard (its name, description and schema are shown unchanged).
    """

    def __init__(self, tool: Tool) -> None:
        self.tool = tool
        self.validates_arguments = getattr(tool, "validates_arguments", False)

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def description(self) -> str:
        return self.tool.description

    @property
    def parameters_schema(self) -> JSONObject:
        return self.tool.parameters_schema

    async def call(self, arguments: JSONObject) -> Any:
        """Run the tool, if an approval gate ruled on this call.

        Raises:
            ToolPermissionDenied: called outside a turn's gate; nothing was done.
        """
        if not _RULED.get():
            raise ToolPermissionDenied(
                "waits for a human's approval on this server, so only an agent's turn may "
                "call it (docs/guardrails.md, 'Human approval')",
                tool=self.tool.name,
            )
        return await self.tool.call(arguments)
