"""``loom serve``'s A2A server (``docs/interop.md``): the agents of ``[a2a] expose`` from the
start, and each agent connected through the bridge whose registration carries an A2A card
(``Agent(..., a2a=AgentCard(...))``) while its stream is open; ``tasks/cancel`` cancels the
turn of a hosted agent in process, and of a connected one with a ``cancel_turn`` frame."""

from __future__ import annotations

import logging
from pathlib import Path

from loom import CognitiveAgent
from loom.bridge import BridgeServer
from loom.runtime import AgentCard, AgentRuntime
from loom.web import A2AAgent, A2AServer

from ._config import ServiceTables

__all__ = ["a2a_server"]

log = logging.getLogger("loom.serve")


def a2a_server(
    tables: ServiceTables,
    runtime: AgentRuntime,
    data_dir: Path,
    hosted: dict[str, CognitiveAgent],
    bridge: BridgeServer,
    *,
    http: bool,
) -> A2AServer | None:
    """The A2A server of the HTTP port (``http``: the port is on). Without the port, ``None``
    unless ``[a2a] expose`` names agents (``loom serve`` then refuses to start)."""
    if not http and not tables.a2a_expose:
        return None
    defaults = {a.agent_id: a for a in (*tables.a2a_expose, *tables.a2a_cards)}

    def cancel_turn(agent_id: str, thread_id: str) -> bool:
        agent = hosted.get(agent_id)
        if agent is not None:
            return agent.cancel(thread_id) > 0
        # An agent in another process: the frame goes on its stream (TurnNotCancellable
        # when its connection does not take it; the A2A cancel is then refused).
        return bridge.cancel_turn(agent_id, thread_id, reason="A2A tasks/cancel")

    a2a = A2AServer(runtime, tables.a2a_expose, data_dir=data_dir, cancel_turn=cancel_turn)

    def presence(agent_id: str, card: AgentCard | None) -> None:
        if card is None:
            a2a.withdraw(agent_id)
            return
        table = defaults.get(agent_id, A2AAgent(agent_id=agent_id))
        a2a.expose(
            A2AAgent(
                agent_id=agent_id,
                description=table.description,
                stream_topic=table.stream_topic,
                card=card,
            )
        )

    if http:
        bridge.add_presence_listener(presence)
    return a2a
