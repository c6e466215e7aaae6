"""Decisions an agent in another process missed while it was away, handed to it again when
its stream opens.

A decision reaches a waiting turn as an ``approval.decided`` event in the agent's mailbox
(``runtime/_approvals.py``). An agent connected through the bridge that is away at that
moment (its connection dropped, the server restarted, the process stopped) has no
subscription to receive it: the event is gone, while the record stays decided and its turn
unresumed. ``CognitiveAgent`` asks for such records when its process starts, but a process
that only reconnects never starts again. So every new stream of an agent gets one
``approval.decided`` event per turn of it that has decided, unresumed approvals, published
into its mailbox on the server's bus as the decision itself was.

Handing a turn over twice is harmless, and happens (the agent's own start-up ask; a decision
that raced the reconnect): the agent resumes what its store says, a turn still pending,
already resumed or being resumed is left alone, and its effect journal keeps each tool at
most once.
"""

from __future__ import annotations

import logging

import msgspec

from loom.runtime import AgentRuntime, Event, LoomError
from loom.runtime.lowlevel import mailbox_topic

__all__ = ["replay_decided"]

log = logging.getLogger("loom.bridge")

_encoder = msgspec.json.Encoder(enc_hook=str)

DECIDED_TYPE = "approval.decided"


async def replay_decided(runtime: AgentRuntime, agent_id: str) -> int:
    """Publish ``approval.decided`` into ``agent_id``'s mailbox once per turn of it whose
    approvals are decided and not resumed; return how many turns.

    A store that cannot answer (closed, failing) is logged and skipped: the records stay,
    and the next stream or start of the agent asks again.
    """
    store = runtime.approvals
    if store is None:
        return 0
    try:
        records = await store.unresumed(agent_id)
    except LoomError as exc:
        log.warning("agent %s: cannot look up its decided approvals: %r", agent_id, exc)
        return 0
    turns = {r.turn_id: r for r in records}  # one wake-up per turn; it reads the rest
    topic = mailbox_topic(agent_id)
    handed = 0
    for record in turns.values():
        event = Event(
            type=DECIDED_TYPE,
            source="loom.approvals",
            payload=_encoder.encode(record),
            metadata={
                "approval_id": record.id,
                "agent_id": record.agent_id,
                "status": record.status,
                "replayed": "reconnect",
            },
        )
        try:
            await runtime.bus.publish(topic, event)
        except LoomError as exc:
            log.warning("agent %s: cannot hand over approval %s: %r", agent_id, record.id, exc)
            break
        handed += 1
    if handed:
        log.info(
            "agent %s: %d turn(s) with decided approvals not yet resumed, handed to it",
            agent_id,
            handed,
        )
    return handed
