"""The seam a waiting turn uses: :class:`ApprovalStore`, what a turn needs of approvals.

In process (``loom serve``'s hosted agents, an :class:`AgentRuntime` given one) it is the
runtime's own :class:`~loom.runtime.Approvals`, a SQLite file. An agent connected through the
bridge (``Agent.run()``, ``loom run``) gets the server's store through ``loom.v1.Approvals``
(``loom.bridge.RemoteApprovals``, as ``ctx.approvals``): the record lives on the server, where
``loom approve`` and the dashboard answer it; only the effect journal stays in the agent's
process. The protocol is owned here, by the layer that uses it (the loop's
:class:`~loom.runtime.cognition.ApprovalGate` and ``CognitiveAgent``).
"""

from __future__ import annotations

from typing import Any, Protocol

from ._approvals import ApprovalPolicy, ApprovalRecord
from ._questions import ApprovalKind

__all__ = ["ApprovalStore"]


class ApprovalStore(Protocol):
    """What a turn needs of an approvals store (:class:`~loom.runtime.Approvals` has it all).

    Attributes:
        policies: the store's own approval policy per tool name (a remote store: none).
    """

    policies: dict[str, ApprovalPolicy]

    async def request(
        self,
        *,
        agent_id: str,
        thread_id: str,
        turn_id: str,
        call_id: str,
        tool: str,
        arguments: dict[str, Any],
        state: bytes = b"",
        timeout_s: float | None = None,
        kind: ApprovalKind = "approval",
    ) -> ApprovalRecord:
        """Store a pending approval (``kind="question"``: a question to the user) with the
        turn's state and announce it (idempotent per agent, turn and call)."""
        ...

    async def for_turn(self, agent_id: str, turn_id: str) -> list[ApprovalRecord]:
        """Every record of one turn, oldest first."""
        ...

    async def unresumed(self, agent_id: str) -> list[ApprovalRecord]:
        """Decided records of the agent whose turn has not resumed yet."""
        ...

    async def state(self, approval_id: str) -> bytes:
        """The turn state saved with a record."""
        ...

    async def mark_resumed(self, agent_id: str, turn_id: str) -> None:
        """The turn went on with its decisions."""
        ...
