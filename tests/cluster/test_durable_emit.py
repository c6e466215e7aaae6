"""A remote publisher's durable publish returns once stored (``STREAM_FEATURE_DURABLE_TOPICS``),
tested against a real ``loom serve`` subprocess (its embedded ``nats-server``) and agent
processes of their own (``_durable_peers.py``), with real signals:

* a remote agent's ``ctx.emit`` on a durable topic returns only after JetStream stored the
  event: ``loom serve`` SIGKILLed the moment the last emit returned loses none of them;
* a non-durable publish is not waited for (still pipelined), and a durable pattern made
  after the stream opened is told to it and waited for from then on;
* a durable publish the server's log cannot store in time raises ``DurableUnavailable``.
"""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from loom.bridge import (
    Acceptance,
    AgentRegistration,
    BridgeClient,
    BridgeServer,
    ClientOptions,
    DurablePublishFailed,
)
from loom.runtime import AgentRuntime, DurableUnavailable, Event, WouldBlock

from ..sdk._cli_support import running_argv
from ._jetstream_support import durable_bus, nats_server
from .test_durable_serve import PEERS, _handled, _handled_all, _serve

pytestmark = pytest.mark.anyio

EMITS = 500


async def test_a_remote_emit_on_a_durable_topic_returns_once_stored(tmp_path: Path) -> None:
    # Without the wait, the emits return as soon as they are queued in the emitter's
    # process: a kill -9 of loom serve the moment the last returned takes the ones not yet
    # stored with it (hundreds, at a few hundred microseconds of store each).
    out = tmp_path / "handled.txt"
    out.write_text("")
    with anyio.fail_after(180):
        async with AsyncExitStack() as stack:
            server, address = await _serve(stack, tmp_path, 0)
            port = address.rsplit(":", 1)[1]
            handler = [*PEERS, "handler", address, "keeper", "kept.>", str(out), "-"]
            # The durable name is made, then its agent goes away: what comes is kept for it.
            async with running_argv(handler, cwd=tmp_path) as keeper:
                await keeper.wait_for(r'"ready": true', timeout=60)
            emitter = [*PEERS, "emitter", address, "emitter", "kept.x", str(EMITS)]
            async with running_argv(emitter, cwd=tmp_path) as emitting:
                await emitting.wait_for(rf'"emitted": {EMITS}', timeout=120)
                server.signal(signal.SIGKILL)  # right after the last emit returned
                await server.process.wait()
            _again, address = await _serve(stack, tmp_path, int(port))
            async with running_argv(handler, cwd=tmp_path) as keeper:
                await keeper.wait_for(r'"ready": true', timeout=60)
                missing = await _handled_all(out, set(range(EMITS)), timeout=60)
    assert not missing, f"{len(missing)} of {EMITS} emitted events lost: {sorted(missing)[:10]}"
    # In emit order (one publisher, stored one after the other).
    firsts = [n for n, attempt, _ in _handled(out) if attempt == 1]
    assert firsts == sorted(firsts)


async def test_only_durable_topics_wait_and_a_late_durable_pattern_is_learnt(
    tmp_path: Path,
) -> None:
    out = tmp_path / "handled.txt"
    out.write_text("")
    registration = AgentRegistration(agent_id="probe")
    with anyio.fail_after(120):
        async with AsyncExitStack() as stack:
            _server, address = await _serve(stack, tmp_path, 0)
            client = await stack.enter_async_context(BridgeClient(address, registration))
            # Dead letters, approval requests and questions to the user (docs/guardrails.md)
            # are always stored; nothing else is durable yet.
            assert client.durable_topics.patterns() == {
                "loom.dlq.>",
                "approval.>",
                "input.requested",
                "input.answered",
            }
            # Not durable: queued and returned, no round trip to the server's acceptance.
            assert await client.publish("late.x", Event(payload=b"0")) is Acceptance.QUEUED
            # A durable name made after this stream opened (by another process's agent).
            handler = [*PEERS, "handler", address, "late", "late.>", str(out), "-"]
            keeper = await stack.enter_async_context(running_argv(handler, cwd=tmp_path))
            await keeper.wait_for(r'"ready": true', timeout=60)
            while not client.durable_topics.matches("late.x"):  # noqa: ASYNC110
                await anyio.sleep(0.01)  # told by a frame of the server: polled, bounded
            outcome = await client.publish("late.x", Event(payload=b"1"))
            assert outcome in (Acceptance.ACCEPTED, Acceptance.UNROUTED)  # stored, acked
            assert await client.publish("other.x", Event()) is Acceptance.QUEUED
            with pytest.raises(WouldBlock, match="durable"):
                client.publish_nowait("late.y", Event(payload=b"2"))  # storing needs a wait
            assert not await _handled_all(out, {1}, timeout=30)
    # (0 may be there too: the server holds a publish nobody takes while agents reattach
    # after its start, its settle window, and publishes it once the durable agent came.)
    assert 2 not in [n for n, _, _ in _handled(out)]  # refused by publish_nowait


async def test_a_durable_publish_not_stored_in_time_raises_durable_unavailable(
    tmp_path: Path,
) -> None:
    # The nats-server is down for longer than the log's publish timeout (1 s): the plain
    # publish (no wait_accepted: what a remote ctx.emit does) fails with DurableUnavailable
    # rather than returning as if published.
    registration = AgentRegistration(agent_id="publisher")
    with anyio.fail_after(60):
        async with (
            nats_server(tmp_path) as nats,
            durable_bus(nats, publish_timeout=1.0) as (bus, _log),
            AgentRuntime(bus, stop_timeout_s=1.0) as runtime,
            BridgeServer(runtime, grace_s=1.0) as server,
            BridgeClient(
                f"127.0.0.1:{server.port}",
                registration,
                options=ClientOptions(durable_publish_timeout=20.0),
            ) as client,
        ):
            bus.register_durable("keeper", ("kept.>",))
            while not client.durable_topics.matches("kept.x"):  # noqa: ASYNC110
                await anyio.sleep(0.01)  # told by a frame of the server: polled, bounded
            assert await client.publish("kept.x", Event()) is not Acceptance.QUEUED
            nats.kill()
            with pytest.raises(DurableUnavailable) as refused:
                await client.publish("kept.x", Event())
            await nats.start()
            outcome = await client.publish("kept.x", Event())
    assert isinstance(refused.value, DurablePublishFailed)
    assert refused.value.code == "DEADLINE_EXCEEDED"
    assert outcome in (Acceptance.ACCEPTED, Acceptance.UNROUTED)
