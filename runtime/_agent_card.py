"""What an agent says about itself to A2A callers, and the refusal of a turn that cannot be
cancelled from where the cancel came (``docs/interop.md``).

:class:`AgentCard` is Loom's own record of an agent's A2A card (``Agent(..., a2a=AgentCard(...))``):
plain data, so that the SDK, the bridge (which carries it in a registration) and the HTTP
side (which turns it into the ``a2a-sdk``'s card) share it without any of them loading the
``a2a-sdk`` to declare one.
"""

from __future__ import annotations

import msgspec

from ._errors import LoomError

__all__ = ["AgentCard", "AgentSkill", "TurnNotCancellable"]


class AgentSkill(msgspec.Struct, frozen=True, kw_only=True):
    """One skill of an :class:`AgentCard` (A2A's ``AgentSkill``, its common fields).

    Attributes:
        id: the skill's id, unique within the card.
        name: its name (default: the id).
        description: what it does.
        tags: keywords.
        examples: example requests.
    """

    id: str
    name: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()


class AgentCard(msgspec.Struct, frozen=True, kw_only=True):
    """An agent's A2A card, declared in code: ``Agent(..., a2a=AgentCard(...))``.

    An agent that has one is exposed over A2A by the ``loom serve`` it runs on or is connected
    to (``/a2a/{id}/`` on its HTTP port) without ``[a2a] expose``; one connected through the
    bridge is served while its stream is open. Each field that is set overrides
    ``[a2a.card.<id>]``; empty ones take that table's value, then the server's default.

    Attributes:
        name: the card's name (default: the agent's id).
        description: what the agent does (default: "Loom agent {id}").
        version: the agent's version (default: Loom's).
        skills: its skills (default: one per capability it offers, else one "message" skill).
        stream_topic: where its turns' partial output goes (default: a ``CognitiveAgent``'s
            ``stream_topic``, else ``agent.{id}.stream``).
    """

    name: str = ""
    description: str = ""
    version: str = ""
    skills: tuple[AgentSkill, ...] = ()
    stream_topic: str = ""


class TurnNotCancellable(LoomError):
    """A running turn cannot be cancelled from here: its agent runs in another process whose
    connection does not take cancels of turns (it is no ``CognitiveAgent``, or its SDK is
    older), or its connection is too busy to take one now. Nothing was cancelled.

    Attributes:
        agent_id: the agent.
        reason: why, in words.
    """

    def __init__(self, agent_id: str, reason: str) -> None:
        super().__init__(f"agent {agent_id!r} cannot be cancelled remotely: {reason}")
        self.agent_id = agent_id
        self.reason = reason
