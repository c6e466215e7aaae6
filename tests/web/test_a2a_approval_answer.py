"""What an answer to an ``input-required`` task says (``web/_a2a_approval.py``), without a
server: the text and data forms, and what is no answer."""

from __future__ import annotations

from a2a.helpers import new_data_part
from a2a.types import Message, Part, Role

from loom.web._a2a_approval import Decision, parse_decision


def _message(*parts: Part) -> Message:
    return Message(role=Role.ROLE_USER, message_id="m", parts=list(parts))


def test_text_answers() -> None:
    assert parse_decision(_message(Part(text="approve"))) == Decision(verdict="approve")
    assert parse_decision(_message(Part(text=" Deny: not that file "))) == Decision(
        verdict="deny", note="not that file"
    )
    assert parse_decision(_message(Part(text="approve looks fine"))) == Decision(
        verdict="approve", note="looks fine"
    )


def test_data_answers() -> None:
    data = {"approval": "deny", "note": "no", "approval_id": "01ABC"}
    assert parse_decision(_message(new_data_part(data))) == Decision(
        verdict="deny", note="no", approval_id="01ABC"
    )
    assert parse_decision(_message(new_data_part({"approval": "approve"}))) == Decision(
        verdict="approve"
    )


def test_what_is_no_answer() -> None:
    assert parse_decision(None) is None
    for text in ("approved?", "maybe", "", "disapprove"):
        assert parse_decision(_message(Part(text=text))) is None, text
    assert parse_decision(_message(new_data_part({"approval": "perhaps"}))) is None
    assert parse_decision(_message(new_data_part(["approve"]))) is None
