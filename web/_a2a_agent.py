"""What says which agents go on A2A, kept apart from the SDK (``_a2a_sdk.py``) so that the
CLI's configuration reads it without loading the SDK."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from loom.runtime import AgentCard

__all__ = ["A2AAgent", "CancelTurn"]

CancelTurn = Callable[[str, str], bool]
"""``cancel_turn(agent_id, thread_id)``: cancel that agent's running turn in that thread (in
this process, or through its connection); False when there is none to cancel here. Raises
``TurnNotCancellable`` when the agent's turn cannot be cancelled from here: the A2A cancel is
then refused."""


class A2AAgent(msgspec.Struct, frozen=True, kw_only=True):
    """An agent exposed over A2A (``[a2a] expose`` of ``loom.toml``, or its own card).

    Attributes:
        agent_id: the agent (running on this server, or connected to it).
        description: the card's description (default: "Loom agent {id}").
        stream_topic: where its turns' partial output goes (a ``CognitiveAgent``'s
            ``stream_topic``; default ``agent.{id}.stream``).
        card: the card the agent declared in code (``Agent(..., a2a=AgentCard(...))``);
            each field it sets overrides the ones above and the defaults.
    """

    agent_id: str
    description: str = ""
    stream_topic: str = ""
    card: AgentCard | None = None
