"""``[a2a]`` of ``loom.toml``, the server's half: the agents ``loom serve`` exposes over A2A
on its HTTP port (``docs/interop.md``)::

    [a2a]
    expose = ["assistant"]

    [a2a.card.assistant]            # optional: what its card says
    description = "Answers questions about the repository."
    stream_topic = "agent.assistant.stream"   # a CognitiveAgent's stream_topic, if changed

An exposed agent may be one of ``[agents]`` or one connected to the server through the bridge.
A card table for an agent ``expose`` does not name gives the defaults of an agent that
declares its own card in code (``Agent(..., a2a=AgentCard(...))``) and is exposed while it is
connected; the fields its card sets win.
``[a2a.remote.<name>]`` (remote A2A agents as tools) is read elsewhere.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from loom.runtime import ConfigError
from loom.web import A2AAgent

__all__ = ["decode_a2a_cards", "decode_a2a_expose"]

# One topic segment: the agent's mailbox is agent.{id}.replies, its URL /a2a/{id}/.
_AGENT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_KEYS = ("expose", "card", "remote")


class _Card(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    description: str = ""
    stream_topic: str = ""


def decode_a2a_expose(table: Any, *, where: str) -> tuple[A2AAgent, ...]:
    """The agents ``[a2a] expose`` names, with their ``[a2a.card.<id>]``.

    Raises:
        ConfigError: ``[a2a]`` is malformed: an unknown key, an id that is not one topic
            segment, an id named twice, a card for an agent not exposed.
    """
    at = f"{where} [a2a]"
    if not isinstance(table, dict):
        raise ConfigError(f"{at}: must be a table")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{at}: unknown key(s) {', '.join(unknown)} (known: {', '.join(_KEYS)})")
    expose = table.get("expose", [])
    if not isinstance(expose, list) or not all(isinstance(x, str) for x in expose):
        raise ConfigError(f"{at}: expose must be a list of agent ids")
    cards = table.get("card", {})
    if not isinstance(cards, dict):
        raise ConfigError(f"{at}: card must be a table of [a2a.card.<agent id>] tables")
    agents: list[A2AAgent] = []
    for agent_id in expose:
        if _AGENT_ID.fullmatch(agent_id) is None:
            raise ConfigError(
                f"{at}: expose: {agent_id!r} is not an agent id (letters, digits, '_', '-')"
            )
        if any(a.agent_id == agent_id for a in agents):
            raise ConfigError(f"{at}: expose names {agent_id!r} twice")
        try:
            card = msgspec.convert(cards.get(agent_id, {}), _Card)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{where} [a2a.card.{agent_id}]: {exc}") from None
        agents.append(
            A2AAgent(
                agent_id=agent_id, description=card.description, stream_topic=card.stream_topic
            )
        )
    return tuple(agents)


def decode_a2a_cards(table: Any, *, where: str) -> tuple[A2AAgent, ...]:
    """The ``[a2a.card.<id>]`` tables of agents ``[a2a] expose`` does not name: the defaults
    of agents that bring their own card (``Agent(..., a2a=AgentCard(...))``), exposed while
    they are connected. (``decode_a2a_expose`` checks the table first.)

    Raises:
        ConfigError: such a table is malformed, or its id is not an agent id.
    """
    if not isinstance(table, dict):
        return ()
    cards = table.get("card", {})
    expose = table.get("expose", [])
    if not isinstance(cards, dict) or not isinstance(expose, list):
        return ()
    agents: list[A2AAgent] = []
    for agent_id in sorted(set(cards) - set(expose)):
        if _AGENT_ID.fullmatch(agent_id) is None:
            raise ConfigError(
                f"{where} [a2a.card.{agent_id}]: not an agent id (letters, digits, '_', '-')"
            )
        try:
            card = msgspec.convert(cards[agent_id], _Card)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{where} [a2a.card.{agent_id}]: {exc}") from None
        agents.append(
            A2AAgent(
                agent_id=agent_id, description=card.description, stream_topic=card.stream_topic
            )
        )
    return tuple(agents)
