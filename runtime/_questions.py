"""Questions to the user: a turn that pauses until a person answers (docs/guardrails.md).

A question is a record of the approvals store (:class:`~loom.runtime.Approvals`) of kind
``question``, not a second store: it waits, survives restarts, expires and wakes the turn
exactly as an approval does. What differs:

- it is asked by the built-in tool ``ask_user`` (``CognitiveAgent(..., ask_user=True)``), its
  text in ``arguments["question"]``;
- it is announced on ``input.requested`` (and ``input.answered`` once settled), durable as
  ``approval.*`` is under ``loom serve``;
- it is settled by :meth:`Approvals.answer` (``loom answer ID TEXT``, the dashboard, A2A's next
  message): status ``answered``, the answer text in ``note``; :meth:`Approvals.deny` withdraws
  it (the model reads that the user declined), its deadline expires it;
- the resumed turn gives the model the answer as the ``ask_user`` call's result
  (:func:`question_result`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ._errors import LoomError

if TYPE_CHECKING:
    from ._approvals import ApprovalRecord

__all__ = [
    "ASK_USER_TOOL",
    "INPUT_ANSWERED_TOPIC",
    "INPUT_REQUESTED_TOPIC",
    "ApprovalKind",
    "NotAQuestion",
    "QuestionAlreadyAnswered",
    "question_result",
]

ASK_USER_TOOL = "ask_user"
"""The built-in tool a model calls to ask the user (its one argument: ``question``)."""

INPUT_REQUESTED_TOPIC = "input.requested"
INPUT_ANSWERED_TOPIC = "input.answered"

ApprovalKind = Literal["approval", "question"]
"""What a record of the approvals store waits for: a decision on a tool call, or an answer."""


class QuestionAlreadyAnswered(LoomError):
    """The question was settled before (answered, withdrawn or expired); nothing changed.

    Attributes:
        question_id: the question's id.
        status: ``answered``, ``denied`` (withdrawn) or ``expired``.
        decided_by: who settled it.
    """

    def __init__(self, question_id: str, status: str, decided_by: str = "") -> None:
        self.question_id = question_id
        self.status = status
        self.decided_by = decided_by
        by = f" by {decided_by}" if decided_by else ""
        state = "withdrawn" if status == "denied" else status
        super().__init__(f"question {question_id} is already {state}{by}")


class NotAQuestion(LoomError, ValueError):
    """An answer was given to a record that is a tool call's approval (or an approval to a
    question): ``loom approve``/``deny`` decide approvals, ``loom answer`` answers questions.

    Attributes:
        record_id: the record.
        kind: what it is (``approval`` or ``question``).
    """

    def __init__(self, record_id: str, kind: str) -> None:
        self.record_id = record_id
        self.kind = kind
        if kind == "approval":
            message = f"{record_id} is a tool call's approval, not a question: approve or deny it"
        else:
            message = f"{record_id} is a question to the user: answer it (loom answer ID TEXT)"
        super().__init__(message)


def question_result(record: ApprovalRecord) -> tuple[str, str]:
    """What the model reads as the ``ask_user`` call's result: ``(content, error_type)``,
    ``error_type`` empty when the user answered."""
    if record.status == "answered":
        return record.note, ""
    if record.status == "expired":
        return (
            "the user did not answer in time; go on without the answer (or say what you need)",
            "QuestionExpired",
        )
    note = f" ({record.note})" if record.note else ""
    return f"the user declined to answer{note}; go on without the answer", "QuestionWithdrawn"
