"""A2A ``input-required`` for a turn that waits for a human's approval (docs/interop.md).

When a ``CognitiveAgent``'s turn ends ``waiting_approval``, the executor (``_a2a_executor.py``)
ends the execution with the task ``input-required``: its status message says what waits (each
call's tool, arguments and approval id) and how to answer, and keeps in its metadata what the
next execution needs to follow the resumed turn (the turn's id, its reply topic, the approval
ids), so the answer is understood after a restart of ``loom serve`` too.

The answer is the task's next message, one of:

* a data part ``{"approval": "approve" | "deny", "note": "...", "approval_id": "..."}``
  (``note`` and ``approval_id`` optional);
* the text ``approve`` or ``deny``, optionally followed by a note (``deny: not that file``).

Without ``approval_id`` it decides every approval the turn waits for. Anything else leaves the
task ``input-required`` and says again how to answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from a2a.helpers import get_data_parts, get_text_parts, new_data_part, new_text_part
from a2a.types import Message
from google.protobuf.json_format import MessageToDict

from loom.runtime import ApprovalRecord, Subscription

__all__ = ["Decision", "Parked", "parked_from", "parse_decision", "waiting_parts"]

HOW_TO_ANSWER = (
    'Answer with a message on this task: the text "approve" or "deny" (a note may follow, as '
    'in "deny: not that file"), or a data part {"approval": "approve"|"deny", "note": "...", '
    '"approval_id": "..."}; or decide it elsewhere (loom approve ID, the dashboard).'
)
TURN_KEY = "loom.turn_id"
REPLY_KEY = "loom.reply_to"
IDS_KEY = "loom.approval_ids"
WAKE_KEY = "loom.wake"
UNSEEN_TEXT = (
    "its approvals were decided while loom serve was not following this task; the turn went "
    "on unseen (its answer is in the agent's memory)"
)


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """An answer to a waiting task: approve or deny, with a note, of one id or of all."""

    verdict: Literal["approve", "deny"]
    note: str = ""
    approval_id: str = ""


class Parked:
    """A task ``input-required`` because its turn waits for approvals.

    ``sub`` is opened (synchronously, before the agent is woken) once every approval is
    decided, so the resumed turn's updates are held until an execution follows them.
    """

    __slots__ = ("context_id", "pending", "ready", "reply_to", "sub", "task_id", "turn_id")

    def __init__(
        self, task_id: str, context_id: str, turn_id: str, reply_to: str, pending: set[str]
    ) -> None:
        self.task_id = task_id
        self.context_id = context_id
        self.turn_id = turn_id
        self.reply_to = reply_to
        self.pending = pending
        self.sub: Subscription | None = None
        # Set once the task says input-required: a decision made before is handled by the
        # execution that parks it.
        self.ready = False


def parse_decision(message: Message | None) -> Decision | None:
    """The decision ``message`` carries, or ``None`` when it carries none."""
    if message is None:
        return None
    for data in get_data_parts(message.parts):
        if isinstance(data, dict) and data.get("approval") in ("approve", "deny"):
            return Decision(
                verdict=data["approval"],
                note=str(data.get("note") or ""),
                approval_id=str(data.get("approval_id") or ""),
            )
    text = "\n".join(get_text_parts(message.parts)).strip()
    for verdict in ("approve", "deny"):
        if text.lower() == verdict or text.lower().startswith((verdict + ":", verdict + " ")):
            note = text[len(verdict) :].lstrip(": \t\n")
            return Decision(verdict=verdict, note=note)
    return None


def waiting_parts(records: Sequence[ApprovalRecord]) -> tuple[list[Any], dict[str, Any]]:
    """The status message's parts (a text saying what waits and how to answer, a data part
    with the calls) for a turn waiting on ``records``."""
    calls = "; ".join(
        f"{r.tool} with {msgspec.json.encode(r.arguments).decode()} (approval {r.id})"
        for r in records
    )
    text = f"Waiting for a human's approval to call {calls}. {HOW_TO_ANSWER}"
    data = {
        "approvals": [
            {
                "approval_id": r.id,
                "tool": r.tool,
                "arguments": r.arguments,
                "call_id": r.call_id,
                "deadline_ms": r.deadline_ms,
            }
            for r in records
        ],
        "answer": {"approval": "approve|deny", "note": "optional", "approval_id": "optional"},
    }
    return [new_text_part(text), new_data_part(data)], data


def parked_from(task_id: str, context_id: str, status_message: Message) -> Parked | None:
    """The :class:`Parked` an ``input-required`` status message of ours describes (after a
    restart), or ``None`` when it is not one of ours."""
    meta = MessageToDict(status_message.metadata)
    turn_id, reply_to, ids = meta.get(TURN_KEY), meta.get(REPLY_KEY), meta.get(IDS_KEY)
    if not isinstance(turn_id, str) or not isinstance(reply_to, str) or not isinstance(ids, list):
        return None
    return Parked(task_id, context_id, turn_id, reply_to, {str(i) for i in ids})
