"""An agent's A2A card on the wire (``AgentRegisterRequest.a2a_card``): it round-trips, and a
registration whose card is malformed or too large is refused before anything is recorded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loom.bridge._agent_card import MAX_CARD_TEXT, MAX_SKILLS, card_from_proto, card_to_proto
from loom.bridge._generated import bridge_pb2, turns_pb2
from loom.bridge._hub import Registration
from loom.bridge._limits import Limits
from loom.runtime import AgentCard, AgentSkill, InvalidArgument, InvalidTopic

_text = st.text(max_size=40)
_skills = st.lists(
    st.builds(
        AgentSkill,
        id=st.text(min_size=1, max_size=20),
        name=_text,
        description=_text,
        tags=st.tuples(_text),
        examples=st.tuples(_text, _text),
    ),
    max_size=5,
    unique_by=lambda s: s.id,
).map(tuple)


@given(
    st.builds(
        AgentCard,
        name=_text,
        description=_text,
        version=_text,
        skills=_skills,
        stream_topic=st.sampled_from(["", "agent.x.stream", "a.b"]),
    )
)
def test_a_card_round_trips(card: AgentCard) -> None:
    wire = turns_pb2.A2ACard.FromString(card_to_proto(card).SerializeToString())
    assert card_from_proto(wire) == card


def test_a_registration_carries_its_card_and_old_ones_none() -> None:
    card = AgentCard(name="N", skills=(AgentSkill(id="s"),))
    request = bridge_pb2.AgentRegisterRequest(agent_id="a")
    assert Registration.from_proto(request, Limits()).a2a is None
    request.a2a_card.CopyFrom(card_to_proto(card))
    assert Registration.from_proto(request, Limits()).a2a == card


@pytest.mark.parametrize(
    ("card", "says"),
    [
        (turns_pb2.A2ACard(skills=[turns_pb2.A2ASkill(id="s")] * 2), "listed twice"),
        (turns_pb2.A2ACard(skills=[turns_pb2.A2ASkill(name="no id")]), "has no id"),
        (
            turns_pb2.A2ACard(
                skills=[turns_pb2.A2ASkill(id=str(i)) for i in range(MAX_SKILLS + 1)]
            ),
            "skills, more than",
        ),
        (turns_pb2.A2ACard(description="x" * (MAX_CARD_TEXT + 1)), "description is"),
        (
            turns_pb2.A2ACard(skills=[turns_pb2.A2ASkill(id="s", tags=["t"] * (MAX_SKILLS + 1))]),
            "tags and examples",
        ),
    ],
)
def test_a_malformed_card_is_refused(card: turns_pb2.A2ACard, says: str) -> None:
    request = bridge_pb2.AgentRegisterRequest(agent_id="a", a2a_card=card)
    with pytest.raises(InvalidArgument, match=says):
        Registration.from_proto(request, Limits())


def test_a_stream_topic_must_be_one_topic() -> None:
    request = bridge_pb2.AgentRegisterRequest(
        agent_id="a", a2a_card=turns_pb2.A2ACard(stream_topic="agent.*.stream")
    )
    with pytest.raises(InvalidTopic):
        Registration.from_proto(request, Limits())
