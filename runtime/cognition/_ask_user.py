"""The built-in ``ask_user`` tool: how a model pauses its turn to ask the user a question.

Offered when the agent enables it (``CognitiveAgent(..., ask_user=True)``). Its calls never
run: the loop's :class:`~loom.runtime.cognition.ApprovalGate` turns each into a record of kind
``question`` in the approvals store and the turn ends ``waiting_approval``, holding no worker,
as for an approval. When the question is answered (``loom answer ID TEXT``, the dashboard,
``runtime.approvals.answer``, A2A's next message), withdrawn (``loom deny``) or expires, the
turn resumes and the model reads the answer (or why there is none) as the call's result.
Semantics: docs/guardrails.md, "Questions to the user".
"""

from __future__ import annotations

from typing import Any

from .._questions import ASK_USER_TOOL
from ..tools import JSONObject, ToolFailed

__all__ = ["AskUser"]

_SCHEMA: JSONObject = {
    "type": "object",
    "properties": {
        "question": {
            "type": "string",
            "description": "The question, as the user will read it.",
            "minLength": 1,
        }
    },
    "required": ["question"],
    "additionalProperties": False,
}


class AskUser:
    """The ``ask_user`` tool's description for the model; the gate answers its calls."""

    name = ASK_USER_TOOL
    description = (
        "Ask the user a question and wait for the answer (it may take minutes or hours). "
        "Use it only when you cannot go on without information or a choice only the user "
        "has. The result is the user's answer, or a note that none came."
    )
    parameters_schema = _SCHEMA

    async def call(self, arguments: JSONObject) -> Any:
        """Never runs when the turn has a gate that asks; without one it says so."""
        raise ToolFailed(
            "NoApprovalsStore",
            "the user cannot be asked here: the agent has no approvals store to wait in",
            tool=ASK_USER_TOOL,
        )
