"""What says which agents go on A2A, kept apart from the SDK (``_a2a_sdk.py``) so that the
CLI's configuration reads it without loading the SDK."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

__all__ = ["A2AAgent", "CancelTurn"]

CancelTurn = Callable[[str, str], bool]
"""``cancel_turn(agent_id, thread_id)``: cancel that agent's running turn in that thread, in
this process; False when there is none to cancel here."""


class A2AAgent(msgspec.Struct, frozen=True, kw_only=True):
    """An agent exposed over A2A (``[a2a] expose`` of ``loom.toml``).

    Attributes:
        agent_id: the agent (running on this server, or connected to it).
        description: the card's description (default: "Loom agent {id}").
        stream_topic: where its turns' partial output goes (a ``CognitiveAgent``'s
            ``stream_topic``; default ``agent.{id}.stream``).
    """

    agent_id: str
    description: str = ""
    stream_topic: str = ""
