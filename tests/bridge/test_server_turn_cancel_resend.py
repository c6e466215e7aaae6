"""Cancels of turns the agent did not confirm (``STREAM_FEATURE_TURN_CANCEL``) are held by the
server and sent again on the agent's next stream (``bridge/_turn_cancels.py``): asked while
the agent had no stream, or sent on a stream that ended unanswered. Bounded in count and in
time. A real server on 127.0.0.1:0 and the raw generated stubs as the agent."""

from __future__ import annotations

import anyio
import pytest

from loom.bridge._generated import bridge_pb2, turns_pb2
from loom.bridge._turn_cancels import HeldCancels

from ._server_harness import OldAgent, Served, channel, serving, wait_until

pytestmark = pytest.mark.anyio

TURNS = bridge_pb2.STREAM_FEATURE_TURN_CANCEL


async def stream(s: Served, agent: OldAgent, *features: int) -> None:
    """Register and open a stream of ``agent`` asking for ``features``."""
    await agent.connect()
    hello = bridge_pb2.StreamHello(features=features)  # type: ignore[arg-type]
    await agent.send(bridge_pb2.ClientEvent(hello=hello))
    welcome = (await agent.next("welcome")).welcome
    assert list(welcome.features) == list(features)


async def drop(s: Served, agent: OldAgent) -> None:
    await agent.close()
    await wait_until(lambda: agent.id not in s.server.hub.sessions)


async def test_a_cancel_unanswered_or_asked_without_a_stream_is_sent_on_the_next() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = OldAgent(ch, "a")
        await stream(s, agent, TURNS)
        # Sent on this stream, never answered: the stream ends with it unconfirmed.
        assert s.server.cancel_turn("a", "t1", "first")
        assert (await agent.next("cancel_turn")).cancel_turn.thread_id == "t1"
        await drop(s, agent)
        # Asked while the agent has no stream: nowhere to go now, held for the next.
        assert not s.server.cancel_turn("a", "t2", "second")
        assert not s.server.cancel_turn("never-registered", "t3")  # not held: no such agent

        await stream(s, agent, TURNS)
        again = [(await agent.next("cancel_turn")).cancel_turn for _ in range(2)]
        assert [(c.thread_id, c.reason) for c in again] == [("t1", "first"), ("t2", "second")]
        # The agent answers one of them (a turn already ended: it cancelled none).
        done = turns_pb2.TurnCancelled(thread_id="t1", cancelled=0)
        await agent.send(bridge_pb2.ClientEvent(turn_cancelled=done))
        await wait_until(lambda: len(s.server.hub.turn_cancels) == 1)
        await drop(s, agent)

        await stream(s, agent, TURNS)
        assert (await agent.next("cancel_turn")).cancel_turn.thread_id == "t2"
        done = turns_pb2.TurnCancelled(thread_id="t2", cancelled=1)
        await agent.send(bridge_pb2.ClientEvent(turn_cancelled=done))
        await wait_until(lambda: len(s.server.hub.turn_cancels) == 0)
        await drop(s, agent)

        # Nothing held any more: the next stream gets no cancel (its first frame is a pong).
        await stream(s, agent, TURNS)
        await agent.ping(7)
        await agent.close()


async def test_a_stream_that_takes_no_cancels_drops_those_held() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = OldAgent(ch, "a")
        await stream(s, agent, TURNS)
        await drop(s, agent)
        assert not s.server.cancel_turn("a", "t1")
        assert len(s.server.hub.turn_cancels) == 1
        await stream(s, agent)  # an SDK without the feature now: its agent runs no turns
        assert len(s.server.hub.turn_cancels) == 0
        await agent.ping(3)
        await agent.close()


async def test_held_cancels_are_bounded_in_count_and_time() -> None:
    held = HeldCancels(hold_s=60.0, max_held=2)
    held.hold("a", "t1", "")
    held.hold("b", "t2", "")
    held.hold("a", "t3", "why")  # the oldest (a, t1) goes
    assert held.due("a") == [("t3", "why")]
    assert held.due("b") == [("t2", "")]
    held.hold("b", "t2", "again")  # the same thread again: one entry, the newest reason
    assert len(held) == 2
    assert held.due("b") == [("t2", "again")]

    brief = HeldCancels(hold_s=0.05)
    brief.hold("a", "t1", "")
    await anyio.sleep(0.1)  # past its hold: a turn that ran this long is let be
    assert brief.due("a") == []
    assert len(brief) == 0
