"""Section 2 on the EventStream: feature negotiation, dynamic subscriptions with QoS and type
filters, delivery batches, publish acks with credit, cancellation of pushed tool calls."""

from __future__ import annotations

import anyio
import grpc
import pytest

from loom.bridge import Limits
from loom.bridge._generated import bridge_pb2, event_pb2, tools_pb2
from loom.runtime import Envelope, Event, QoS

from ._server_harness import OldAgent, channel, descriptor, event, serving, wait_until

pytestmark = pytest.mark.anyio

BATCH = bridge_pb2.STREAM_FEATURE_BATCH
ACK = bridge_pb2.STREAM_FEATURE_PUBLISH_ACK
CANCEL = bridge_pb2.STREAM_FEATURE_TOOL_CANCEL


async def hello(
    agent: OldAgent, *features: int, max_batch: int = 0, window: int = 0
) -> bridge_pb2.StreamWelcome:
    msg = bridge_pb2.StreamHello(
        features=features,  # type: ignore[arg-type]
        max_batch_events=max_batch,
        publish_window=window,
    )
    await agent.send(bridge_pb2.ClientEvent(hello=msg))
    return (await agent.next("welcome")).welcome


async def test_negotiation_grants_a_subset_within_the_servers_limits() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "a").connect()
        welcome = await hello(agent, BATCH, ACK, 99, max_batch=100_000, window=10**9)
        assert list(welcome.features) == [BATCH, ACK]  # 99 is unknown: ignored
        assert welcome.max_batch_events == s.server.limits.max_batch_events
        assert welcome.publish_window == s.server.limits.publish_window
        await agent.send(bridge_pb2.ClientEvent(hello=bridge_pb2.StreamHello()))
        frame = await agent.next("err")
        assert "once" in frame.err.message

        other = await OldAgent(ch, "b").connect()
        welcome = await hello(other, CANCEL, max_batch=7, window=3)
        assert list(welcome.features) == [CANCEL]
        assert welcome.max_batch_events == 7
        assert welcome.publish_window == 0  # no acks asked for: no window


async def subscribe(
    agent: OldAgent, request: bridge_pb2.SubscribeRequest
) -> bridge_pb2.SubscribeResult:
    await agent.send(bridge_pb2.ClientEvent(subscribe=request))
    return (await agent.next("subscription")).subscription


async def unsubscribe(agent: OldAgent, **target: object) -> bridge_pb2.SubscribeResult:
    request = bridge_pb2.UnsubscribeRequest(request_id="u", **target)  # type: ignore[arg-type]
    await agent.send(bridge_pb2.ClientEvent(unsubscribe=request))
    return (await agent.next("subscription")).subscription


async def test_dynamic_subscriptions_with_qos_and_type_filter() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "dyn").connect(topics=["static.>"])
        result = await subscribe(
            agent,
            bridge_pb2.SubscribeRequest(
                request_id="r1",
                pattern="metrics.*",
                qos=event_pb2.QOS_REALTIME,
                event_types=["cpu"],
                buffer_size=8,
            ),
        )
        assert result.ok
        assert result.request_id == "r1"
        assert result.subscription_id
        (stats,) = [x for x in s.bus.statistics().subscriptions if x.id == result.subscription_id]
        assert (stats.pattern, stats.qos, stats.capacity) == ("metrics.*", QoS.REALTIME, 8)
        assert [a.id for a in s.runtime.directory.by_topic("metrics.host1")] == ["dyn"]
        await s.bus.publish("metrics.host1", Event(type="mem"))  # filtered out
        await s.bus.publish("metrics.host1", Event(type="cpu"))
        frame = await agent.next("delivery")
        assert (frame.delivery.topic, frame.delivery.event.type) == ("metrics.host1", "cpu")

        refused = await subscribe(
            agent, bridge_pb2.SubscribeRequest(request_id="r2", pattern="a.>.b")
        )
        assert (refused.ok, refused.code, refused.request_id) == (False, "INVALID_ARGUMENT", "r2")
        assert "a.>.b" in refused.reason
        refused = await subscribe(
            agent,
            bridge_pb2.SubscribeRequest(pattern="a", qos=7),  # type: ignore[arg-type]
        )
        assert (refused.ok, refused.code) == (False, "INVALID_ARGUMENT")
        refused = await subscribe(
            agent, bridge_pb2.SubscribeRequest(pattern="a", buffer_size=10**7)
        )
        assert (refused.ok, refused.code) == (False, "INVALID_ARGUMENT")

        gone = await unsubscribe(agent, subscription_id=result.subscription_id)
        assert gone.ok
        assert gone.subscription_id == result.subscription_id
        assert s.runtime.directory.by_topic("metrics.host1") == []
        again = await unsubscribe(agent, subscription_id=result.subscription_id)
        assert (again.ok, again.code) == (False, "NOT_FOUND")
        assert (await unsubscribe(agent, pattern="static.>")).ok
        assert s.runtime.directory.by_topic("static.x") == []
        mailbox = await unsubscribe(agent, pattern="agent.dyn.replies")
        assert (mailbox.ok, mailbox.code) == (False, "INVALID_ARGUMENT")
        assert (await unsubscribe(agent, pattern="never.held")).code == "NOT_FOUND"
        assert (await unsubscribe(agent)).code == "INVALID_ARGUMENT"
        info = s.runtime.directory.get("dyn")
        assert info is not None
        assert info.patterns == ("agent.dyn.replies",)


async def test_overlapping_patterns_deliver_each_event_once() -> None:
    """A plain dynamic subscription joins the agent's mailbox, as ctx.subscribe does in
    process: an event its registered and dynamic patterns both match arrives once, in order."""
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "overlap").connect(topics=["input.*"])
        result = await subscribe(agent, bridge_pb2.SubscribeRequest(pattern="input.x"))
        assert result.ok
        await s.bus.publish("input.x", Event(type="first"))
        await s.bus.publish("input.y", Event(type="second"))
        first = await agent.next("delivery")
        second = await agent.next("delivery")
        assert [first.delivery.event.type, second.delivery.event.type] == ["first", "second"]
        await agent.ping(7)  # nothing else was queued before the pong: no duplicate
        assert (await unsubscribe(agent, pattern="input.x")).ok
        info = s.runtime.directory.get("overlap")
        assert info is not None
        assert set(info.patterns) == {"agent.overlap.replies", "input.*"}


@pytest.mark.parametrize("qos", [event_pb2.QOS_REALTIME, event_pb2.QOS_BATCHED])
async def test_a_slow_agent_gets_the_tier_it_asked_for(qos: int) -> None:
    async with serving(limits=Limits(outbound_queue=16)) as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "slow").connect()
        result = await subscribe(
            agent,
            bridge_pb2.SubscribeRequest(pattern="work.*", qos=qos, buffer_size=2),  # type: ignore[arg-type]
        )
        assert result.ok
        # The agent does not read: the wire, the outbound queue and then the buffer fill.
        # Realtime then drops; Batched holds the publisher back instead.
        payload = b"x" * 1000
        with anyio.move_on_after(1) as scope:
            for _ in range(20_000):
                await s.bus.publish("work.item", Event(type="w", payload=payload))
        (stats,) = [x for x in s.bus.statistics().subscriptions if x.id == result.subscription_id]
        if qos == event_pb2.QOS_REALTIME:
            assert not scope.cancelled_caught
            assert stats.dropped.overflow > 0
        else:
            assert scope.cancelled_caught
            assert stats.dropped.overflow == 0
            assert stats.waiting_publishers == 0  # the cancelled publisher left the queue


async def test_batches_carry_many_events_in_order_and_only_when_negotiated() -> None:
    async with serving() as s, channel(s.target) as ch:
        batched = await OldAgent(ch, "batched").connect(topics=["burst.>"])
        plain = await OldAgent(ch, "plain").connect(topics=["burst.>"])
        assert list((await hello(batched, BATCH, max_batch=10)).features) == [BATCH]
        n = 2000
        for i in range(n):
            await s.bus.publish("burst.x", Event(type="b", payload=str(i).encode()))
        got: list[bytes] = []
        sizes: list[int] = []
        while len(got) < n:
            frame = await batched.read()
            if frame.WhichOneof("msg") == "delivery":
                sizes.append(1)
                got.append(frame.delivery.event.payload)
            else:
                batch = frame.delivery_batch.deliveries
                sizes.append(len(batch))
                got.extend(d.event.payload for d in batch)
                assert all(d.topic == "burst.x" for d in batch)
        assert got == [str(i).encode() for i in range(n)]
        assert max(sizes) <= 10
        assert max(sizes) > 1  # many events per gRPC message
        for i in range(n):
            frame = await plain.next("delivery")  # an old client only ever gets singles
            assert frame.delivery.event.payload == str(i).encode()


async def test_the_envelope_is_mirrored_into_metadata_only_for_old_clients() -> None:
    async with serving() as s, channel(s.target) as ch:
        new = await OldAgent(ch, "new").connect(topics=["env.>"])
        old = await OldAgent(ch, "old").connect(topics=["env.>"])
        await hello(new, CANCEL)  # any hello: a section-2 peer reads the typed envelope
        envelope = Envelope(sender="someone", correlation_id="c-1", thread_id="t-1", hop=2)
        sent = Event(type="e", metadata={"user": "kept"}, envelope=envelope)
        await s.bus.publish("env.x", sent)
        typed = (await new.next("delivery")).delivery.event
        assert dict(typed.metadata) == {"user": "kept"}
        assert (typed.envelope.sender, typed.envelope.correlation_id) == ("someone", "c-1")
        assert (typed.envelope.thread_id, typed.envelope.hop) == ("t-1", 2)
        mirrored = (await old.next("delivery")).delivery.event
        assert dict(mirrored.metadata) == {
            "user": "kept",
            "sender": "someone",
            "correlation_id": "c-1",
            "thread_id": "t-1",
            "ttl": str(envelope.ttl),
            "hop": "2",
        }


async def acks_until(
    agent: OldAgent, sequence: int
) -> tuple[int, list[bridge_pb2.PublishRejection]]:
    credit = 0
    rejections: list[bridge_pb2.PublishRejection] = []
    while True:
        ack = (await agent.next("publish_ack")).publish_ack
        credit += ack.credit
        rejections.extend(ack.rejections)
        if ack.sequence >= sequence:
            assert ack.sequence == sequence
            return credit, rejections


def batch(*topics: str) -> bridge_pb2.ClientEvent:
    publishes = [bridge_pb2.Publish(topic=t, event=event("p")) for t in topics]
    return bridge_pb2.ClientEvent(publish_batch=bridge_pb2.PublishBatch(publishes=publishes))


async def test_publish_acks_and_credit() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "pub").connect()
        welcome = await hello(agent, ACK, window=4)
        assert welcome.publish_window == 4
        # Six in one frame with four credits: the last two are refused, not buffered.
        await agent.send(batch(*["acked.t"] * 6))
        credit, rejections = await acks_until(agent, 6)
        assert credit == 4
        assert [(r.sequence, r.code) for r in rejections] == [
            (5, "RESOURCE_EXHAUSTED"),
            (6, "RESOURCE_EXHAUSTED"),
        ]
        assert "credit" in rejections[0].reason
        (topic,) = [t for t in s.bus.statistics().topics if t.topic == "acked.t"]
        assert topic.published == 4
        # A bad publish is numbered, answered in an ack (not an err frame), and its credit
        # comes back.
        await agent.send(batch("ok.topic", "bad..topic"))
        await agent.publish("ok.topic", event("single"))
        credit, rejections = await acks_until(agent, 9)
        assert credit == 3
        assert [(r.sequence, r.code) for r in rejections] == [(8, "INVALID_ARGUMENT")]


async def test_an_idle_stream_is_settled_when_the_linger_ends() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "idle").connect()
        await hello(agent, ACK, window=100)
        for _ in range(3):  # far from half the window, and nobody asks: the linger's timer
            await agent.publish("idle.t", event("one"))
        credit, rejections = await acks_until(agent, 3)
        assert (credit, rejections) == (3, [])
        await agent.send(batch("bad..topic"))  # a rejection is settled the same way
        _, rejections = await acks_until(agent, 4)
        assert [(r.sequence, r.code) for r in rejections] == [(4, "INVALID_ARGUMENT")]


async def test_credit_and_requested_acks_do_not_wait_for_the_linger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A linger nothing here could wait out: every ack below is due to a rule of its own.
    monkeypatch.setattr("loom.bridge._server_session._ACK_LINGER", 3600.0)
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "lingering").connect()
        await hello(agent, ACK, window=8)
        await agent.publish("linger.t", event("first"))
        credit, _ = await acks_until(agent, 1)  # the first of a stream: no ack before it
        assert credit == 1
        # Half the window due back is acked at once, so credit never waits for the linger.
        for _ in range(4):
            await agent.publish("linger.t", event("steady"))
        credit, _ = await acks_until(agent, 5)
        assert credit == 4
        # A batch (of one) that asks for its ack gets it as soon as it is handled.
        await agent.publish("linger.t", event("x"))
        frame = bridge_pb2.PublishBatch(
            publishes=[bridge_pb2.Publish(topic="linger.t", event=event("asked"))],
            ack_requested=True,
        )
        await agent.send(bridge_pb2.ClientEvent(publish_batch=frame))
        credit, rejections = await acks_until(agent, 7)
        assert (credit, rejections) == (2, [])
        (topic,) = [t for t in s.bus.statistics().topics if t.topic == "linger.t"]
        assert topic.published == 7


async def test_flow_control_stops_a_fast_publisher_at_the_window() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "fast").connect()
        await hello(agent, ACK, window=8)
        async with s.bus.subscribe("flow.>", qos=QoS.BATCHED, buffer_size=4) as sub:
            await agent.send(batch(*["flow.x"] * 8))
            credit, _ = await acks_until(agent, 4)  # the buffer took four; the fifth waits
            assert credit == 4
            await wait_until(lambda: sub.statistics().waiting_publishers == 1)
            # The client has 4 credits back: a fifth publish more is refused outright.
            await agent.send(batch(*["flow.x"] * 5))
            # The pong proves the server read that frame before room is made below (else the
            # acks of 5..8 could reach its credit first, and all five would fit).
            await agent.ping(2)
            for _ in range(13 - 1):
                await sub.receive()
            credit, rejections = await acks_until(agent, 13)
            assert credit == 8
            assert [(r.sequence, r.code) for r in rejections] == [(13, "RESOURCE_EXHAUSTED")]


async def test_oversized_publish_batch_entries_are_refused() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "b").connect()
        await hello(agent, ACK, max_batch=3, window=100)
        await agent.send(batch(*["x.y"] * 5))
        _, rejections = await acks_until(agent, 5)
        assert [(r.sequence, r.code) for r in rejections] == [
            (4, "INVALID_ARGUMENT"),
            (5, "INVALID_ARGUMENT"),
        ]
        assert "max_batch_events" in rejections[0].reason


async def test_cancel_of_a_pushed_call_when_the_caller_gives_up() -> None:
    async with serving() as s, channel(s.target) as ch:
        worker = await OldAgent(ch, "w").connect(tools=[descriptor("w.job")])
        await hello(worker, CANCEL)
        caller = OldAgent(ch, "c")

        # The caller cancels its RPC.
        call = caller.bridge.ForwardToolCall(tools_pb2.ToolCall(name="w.job", arguments="{}"))
        pushed = await worker.next("tool_call")
        call.cancel()
        cancel = (await worker.next("cancel_tool_call")).cancel_tool_call
        assert (cancel.id, cancel.reason) == (pushed.tool_call.id, "caller cancelled")

        # Its deadline passes.
        outcome: object
        try:
            result = await caller.bridge.ForwardToolCall(
                tools_pb2.ToolCall(name="w.job", arguments="{}"), timeout=0.2
            )
            outcome = result.status
        except grpc.aio.AioRpcError as exc:
            outcome = exc.code()
        assert outcome in (grpc.StatusCode.DEADLINE_EXCEEDED, tools_pb2.TOOL_TIMEOUT)
        pushed = await worker.next("tool_call")
        cancel = (await worker.next("cancel_tool_call")).cancel_tool_call
        assert (cancel.id, cancel.reason) == (pushed.tool_call.id, "deadline exceeded")

        # A local caller is cancelled the same way.
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def local() -> None:
                    await s.runtime.call_tool("w.job", {})

                tg.start_soon(local)
                pushed = await worker.next("tool_call")
                scope.cancel()
        cancel = (await worker.next("cancel_tool_call")).cancel_tool_call
        assert (cancel.id, cancel.reason) == (pushed.tool_call.id, "caller cancelled")
        # A result after the cancel is discarded quietly.
        await worker.answer(pushed.tool_call.id, 1)
        await worker.ping(4)
        assert s.server.statistics().pending_tool_calls == 0
