"""An agent's A2A card on the wire (``AgentRegisterRequest.a2a_card``, ``turns.proto``):
:class:`~loom.runtime.AgentCard` to protobuf and back, checked and bounded on the way in (a
registration is untrusted input)."""

from __future__ import annotations

from loom.bridge._generated import turns_pb2
from loom.runtime import AgentCard, AgentSkill, InvalidArgument
from loom.runtime.lowlevel import validate_topic

__all__ = ["MAX_CARD_TEXT", "MAX_SKILLS", "card_from_proto", "card_to_proto"]

MAX_SKILLS = 64
"""Skills one card may list."""
MAX_CARD_TEXT = 4096
"""Characters one field of a card (or of a skill) may hold."""


def card_to_proto(card: AgentCard) -> turns_pb2.A2ACard:
    return turns_pb2.A2ACard(
        name=card.name,
        description=card.description,
        version=card.version,
        stream_topic=card.stream_topic,
        skills=[
            turns_pb2.A2ASkill(
                id=s.id,
                name=s.name,
                description=s.description,
                tags=s.tags,
                examples=s.examples,
            )
            for s in card.skills
        ],
    )


def _text(value: str, what: str) -> str:
    if len(value) > MAX_CARD_TEXT:
        raise InvalidArgument(
            f"a2a_card: {what} is {len(value)} characters, more than {MAX_CARD_TEXT}"
        )
    return value


def card_from_proto(msg: turns_pb2.A2ACard) -> AgentCard:
    """The card of a registration.

    Raises:
        InvalidArgument: more than ``MAX_SKILLS`` skills, a skill without an id or named
            twice, a field longer than ``MAX_CARD_TEXT``, a ``stream_topic`` that is not a
            topic (``InvalidTopic``).
    """
    if len(msg.skills) > MAX_SKILLS:
        raise InvalidArgument(f"a2a_card: {len(msg.skills)} skills, more than {MAX_SKILLS}")
    skills: list[AgentSkill] = []
    for i, skill in enumerate(msg.skills):
        if not skill.id:
            raise InvalidArgument(f"a2a_card: skill {i} has no id")
        if any(s.id == skill.id for s in skills):
            raise InvalidArgument(f"a2a_card: skill {skill.id!r} is listed twice")
        lists = (*skill.tags, *skill.examples)
        if len(lists) > MAX_SKILLS:
            raise InvalidArgument(
                f"a2a_card: skill {skill.id!r} has more than {MAX_SKILLS} tags and examples"
            )
        for text in (skill.id, skill.name, skill.description, *lists):
            _text(text, f"skill {skill.id[:40]!r}")
        skills.append(
            AgentSkill(
                id=skill.id,
                name=skill.name,
                description=skill.description,
                tags=tuple(skill.tags),
                examples=tuple(skill.examples),
            )
        )
    if msg.stream_topic:
        validate_topic(msg.stream_topic)  # one topic: the A2A side follows it, no wildcards
    return AgentCard(
        name=_text(msg.name, "name"),
        description=_text(msg.description, "description"),
        version=_text(msg.version, "version"),
        stream_topic=_text(msg.stream_topic, "stream_topic"),
        skills=tuple(skills),
    )
