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

__all__ = ["NeedsApproval", "approval_ruled", "ruled_approval"]

_RULED: ContextVar[bool] = ContextVar("loom_approval_ruled", default=False)
_APPROVAL: ContextVar[str] = ContextVar("loom_approval_id", default="")


@contextmanager
def approval_ruled(approval_id: str = "") -> Iterator[None]:
    """Within: the tool calls made were ruled on by an approval gate (``approval_id``: the
    approval a human gave the call, if one did)."""
    token = _RULED.set(True)
    id_token = _APPROVAL.set(approval_id)
    try:
        yield
    finally:
        _APPROVAL.reset(id_token)
        _RULED.reset(token)


def ruled_approval() -> str:
    """The id of the approval a human gave the call being made (``""``: none). A call
    forwarded to a server carries it (the ``loom-approval`` header), so the server's own
    :class:`NeedsApproval` tool runs a call its store shows approved."""
    return _APPROVAL.get() if _RULED.get() else ""


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
