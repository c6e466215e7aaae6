"""A2A ``input-required`` for a turn that asks the user a question (its ``ask_user`` call;
docs/interop.md).

The task's status message is the question itself (a text part), with a data part listing
each waiting question (``question_id``, ``question``, ``deadline_ms``). The next message on
the task answers it: its text (or a data part ``{"answer": "...", "question_id": "..."}``)
is the answer the model reads. When the turn waits for several questions, the message
answers the oldest (or the one named) and the task asks the next; when it waits for a tool
call's approval too, a message that decides (``approve``/``deny``, ``_a2a_approval.py``)
goes to the approvals, anything else answers a question.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from a2a.helpers import get_data_parts, get_text_parts, new_data_part, new_text_part
from a2a.types import Message

from loom.runtime import ApprovalRecord

from ._a2a_approval import parse_decision, waiting_parts

__all__ = ["question_answer", "waiting_message_parts"]


def waiting_message_parts(records: Sequence[ApprovalRecord]) -> tuple[list[Any], str]:
    """The status message's parts for a turn waiting on ``records`` (questions first: the
    first part is the oldest question's text) and the ``loom`` kind of the status update."""
    questions = [r for r in records if r.kind == "question"]
    approvals = [r for r in records if r.kind != "question"]
    parts: list[Any] = []
    if questions:
        parts.append(new_text_part(str(questions[0].arguments.get("question", ""))))
        parts.append(
            new_data_part(
                {
                    "questions": [
                        {
                            "question_id": q.id,
                            "question": str(q.arguments.get("question", "")),
                            "deadline_ms": q.deadline_ms,
                        }
                        for q in questions
                    ],
                    "answer": "the next message's text, or {'answer': ..., 'question_id': ...}",
                }
            )
        )
    if approvals:
        parts += waiting_parts(approvals)[0]
    return parts, "input.requested" if questions else "approval.requested"


def question_answer(
    message: Message | None, records: Sequence[ApprovalRecord]
) -> tuple[str, str] | None:
    """``(question id, answer)`` when ``message`` answers one of the pending ``records``;
    ``None`` when it does not (no question waits, the message is empty, or it decides the
    approvals that wait beside the questions)."""
    questions = [r for r in records if r.kind == "question" and r.status == "pending"]
    if message is None or not questions:
        return None
    for data in get_data_parts(message.parts):
        if isinstance(data, dict) and isinstance(data.get("answer"), str):
            wanted = str(data.get("question_id") or "")
            named = [q for q in questions if q.id.startswith(wanted)] if wanted else questions
            return (named[0].id, data["answer"]) if named else None
    if len(questions) < len(records) and parse_decision(message) is not None:
        return None  # "approve"/"deny" while an approval waits too: that one's decision
    text = "\n".join(get_text_parts(message.parts)).strip()
    return (questions[0].id, text) if text else None
