"""Runtime values <-> ``loom.v1`` messages: round trips (Hypothesis) and every malformed input."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loom.bridge._convert import (
    ENVELOPE_KEYS,
    bus_stats_from_proto,
    bus_stats_to_proto,
    delivery_from_proto,
    delivery_to_proto,
    envelope_from_metadata,
    event_from_proto,
    event_to_proto,
    publish_from_proto,
    publish_to_proto,
    qos_from_proto,
    qos_to_proto,
    tool_call_from_proto,
    tool_call_to_proto,
    tool_descriptor_from_proto,
    tool_descriptor_to_proto,
    tool_result_from_proto,
    tool_result_to_proto,
)
from loom.bridge._errors import WireError
from loom.bridge._generated import bridge_pb2, bus_pb2, event_pb2, tools_pb2
from loom.bridge._wire_types import (
    ProviderKind,
    ToolCallOutcome,
    ToolCallRequest,
    ToolDescriptor,
    ToolErrorInfo,
    ToolStatus,
)
from loom.runtime import (
    DEFAULT_TTL,
    BusStats,
    Delivery,
    Drops,
    Envelope,
    Event,
    EventBus,
    LoomError,
    QoS,
    SubscriptionStats,
    TopicStats,
)
from loom.runtime.lowlevel import reply_envelope, reply_topic

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
RESERVED = set(ENVELOPE_KEYS) | {f"loom.{k}" for k in ENVELOPE_KEYS}
U32 = 2**32 - 1


def wire(msg: event_pb2.Event) -> event_pb2.Event:
    """``msg`` through its bytes, as the other side of a connection gets it."""
    return event_pb2.Event.FromString(msg.SerializeToString())


def old_client_event(metadata: dict[str, str], **fields: object) -> event_pb2.Event:
    """An Event as an old client sends it: section-1 fields only, envelope in metadata."""
    return event_pb2.Event(id="e1", type="t", metadata=metadata, **fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------ strategies

texts = st.text(max_size=12)
user_keys = texts.filter(lambda k: k not in RESERVED)
hex_ids = st.integers(1, 2**128 - 1).map(lambda n: f"{n:032x}")
span_ids = st.integers(1, 2**64 - 1).map(lambda n: f"{n:016x}")
flags = st.integers(0, 255).map(lambda n: f"{n:02x}")


@st.composite
def traceparents(draw: st.DrawFn) -> str:
    return f"00-{draw(hex_ids)}-{draw(span_ids)}-{draw(flags)}"


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    traceparent = draw(st.one_of(st.just(""), traceparents()))
    return Envelope(
        thread_id=draw(texts),
        correlation_id=draw(texts),
        sender=draw(texts),
        reply_to=draw(texts),
        ttl=draw(st.integers(0, U32)),
        hop=draw(st.integers(0, U32)),
        traceparent=traceparent,
        tracestate=draw(texts) if traceparent else "",
    )


events = st.builds(
    Event,
    id=texts,
    type=texts,
    timestamp_ms=st.integers(-(2**63), 2**63 - 1),
    source=texts,
    metadata=st.dictionaries(user_keys, texts, max_size=4),
    payload=st.binary(max_size=32),
    # The wire's confidence is a float32; these are the values it holds exactly.
    confidence=st.floats(0.0, 1.0, width=32),
    tags=st.lists(texts, max_size=3).map(tuple),
    priority=st.integers(-(2**31), 2**31 - 1),
    envelope=envelopes(),
)


# ------------------------------------------------------------------ events: round trips


@given(events)
def test_event_round_trip(event: Event) -> None:
    assert event_from_proto(wire(event_to_proto(event))) == event


@given(events)
def test_event_round_trip_without_the_mirror(event: Event) -> None:
    # What a section-2 peer gets: the typed envelope only, the same event back.
    msg = event_to_proto(event, mirror=False)
    assert set(msg.metadata) == set(event.metadata)
    assert event_from_proto(wire(msg)) == event


@given(events)
def test_event_mirrors_envelope_for_old_clients(event: Event) -> None:
    msg = event_to_proto(event)
    env = event.envelope
    # An old client reads only metadata: the envelope it finds there is the event's own
    # (bar tracestate, which the original core never had).
    from_metadata = envelope_from_metadata(dict(msg.metadata))
    assert from_metadata == msgspec.structs.replace(env, tracestate="")
    for key, value in event.metadata.items():
        assert msg.metadata[key] == value


_STRING_KEYS = ("thread_id", "correlation_id", "sender", "reply_to")


@st.composite
def old_metadata(draw: st.DrawFn) -> dict[str, str]:
    """Metadata as old clients and the original core write it: each envelope key absent, in
    one spelling, or in both (with different values), among the user's own keys."""
    values: dict[str, st.SearchStrategy[str]] = {
        **{k: st.text(min_size=1, max_size=8) for k in _STRING_KEYS},
        "ttl": st.integers(0, U32).map(str),
        "hop": st.integers(0, U32).map(str),
    }
    metadata = draw(st.dictionaries(user_keys, texts, max_size=3))
    if draw(st.booleans()):
        metadata["loom.ttl_ms"] = str(draw(st.integers(0, 10**6)))
    if draw(st.booleans()):
        metadata["ts"] = str(draw(st.integers(0, 2**41)))
    spellings = st.sampled_from([(), ("loom.",), ("",), ("loom.", "")])
    for key, strategy in values.items():
        for prefix in draw(spellings):
            metadata[prefix + key] = draw(strategy)
    if draw(st.booleans()):  # the trace trio comes whole or not at all
        trio = {"trace_id": hex_ids, "span_id": span_ids, "trace_flags": flags}
        for key, strategy in trio.items():
            for prefix in draw(spellings.filter(bool)):
                metadata[prefix + key] = draw(strategy)
    return metadata


def old_view(metadata: dict[str, str]) -> dict[str, str]:
    """What an old client reads: each envelope key prefixed first, then unprefixed."""
    view = {k: v for k, v in metadata.items() if k not in RESERVED}
    for key in ENVELOPE_KEYS:
        view[key] = metadata.get(f"loom.{key}") or metadata.get(key) or ""
    view["ttl"] = view["ttl"] or str(DEFAULT_TTL)
    view["hop"] = view["hop"] or "0"
    return view


@given(old_metadata())
def test_old_client_event_keeps_what_old_clients_see(metadata: dict[str, str]) -> None:
    sent = old_client_event(metadata, payload=b"p", confidence=0.5, tags=["a"], priority=2)
    event = event_from_proto(wire(sent))
    # The runtime event holds the envelope once: typed, not also in metadata.
    assert RESERVED.isdisjoint(event.metadata)
    assert event.envelope.sender == (metadata.get("loom.sender") or metadata.get("sender", ""))
    back = wire(event_to_proto(event))
    assert old_view(dict(back.metadata)) == old_view(metadata)
    for name in ("id", "type", "timestamp_ms", "source", "payload", "confidence", "priority"):
        assert getattr(back, name) == getattr(sent, name)
    assert list(back.tags) == list(sent.tags)
    # A second trip changes nothing: the form is stable.
    assert event_from_proto(back) == event


# ------------------------------------------------------------------ events: envelope rules


def test_prefixed_spelling_wins_and_both_are_stripped() -> None:
    msg = old_client_event(
        {
            "loom.sender": "new",
            "sender": "old",
            "correlation_id": "c1",
            "loom.thread_id": "",  # empty counts as absent
            "thread_id": "th",
            "ttl": "3",
            "loom.hop": "1",
            "hop": "2",
            "keep": "me",
        }
    )
    event = event_from_proto(msg)
    assert event.envelope == Envelope(
        sender="new", correlation_id="c1", thread_id="th", ttl=3, hop=1
    )
    assert event.metadata == {"keep": "me"}


def test_typed_envelope_wins_over_metadata() -> None:
    msg = event_pb2.Event(
        id="e",
        metadata={"sender": "stale", "loom.reply_to": "stale", "x": "y"},
        envelope=event_pb2.Envelope(sender="typed", ttl=5, hop=2),
    )
    event = event_from_proto(msg)
    assert event.envelope == Envelope(sender="typed", ttl=5, hop=2)
    assert event.metadata == {"x": "y"}


def test_typed_envelope_without_ttl_has_the_default_budget() -> None:
    absent = event_from_proto(event_pb2.Event(envelope=event_pb2.Envelope(sender="s")))
    assert absent.envelope.ttl == DEFAULT_TTL
    zero = event_from_proto(event_pb2.Event(envelope=event_pb2.Envelope(ttl=0)))
    assert zero.envelope.ttl == 0


def test_no_envelope_anywhere_gives_the_default_envelope() -> None:
    assert event_from_proto(old_client_event({})).envelope == Envelope()


def test_time_budget_and_core_timestamp_stay_in_metadata() -> None:
    metadata = {"loom.ttl_ms": "30000", "ts": "1700000000000", "ttl": "4"}
    event = event_from_proto(old_client_event(metadata))
    assert event.envelope.ttl == 4  # the hop budget, from `ttl` only
    assert event.metadata == {"loom.ttl_ms": "30000", "ts": "1700000000000"}
    back = event_to_proto(event).metadata
    assert (back["loom.ttl_ms"], back["ts"], back["ttl"]) == ("30000", "1700000000000", "4")


def test_written_metadata_is_the_unprefixed_mirror() -> None:
    env = Envelope(
        thread_id="th",
        correlation_id="c",
        sender="s",
        reply_to="r",
        ttl=9,
        hop=1,
        traceparent=TRACEPARENT,
        tracestate="k=v",
    )
    msg = event_to_proto(Event(id="e", metadata={"user": "1"}, envelope=env))
    assert dict(msg.metadata) == {
        "user": "1",
        "thread_id": "th",
        "correlation_id": "c",
        "sender": "s",
        "reply_to": "r",
        "ttl": "9",
        "hop": "1",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "trace_flags": "01",
    }
    assert msg.envelope.tracestate == "k=v"
    # Empty strings are not mirrored; ttl and hop always are.
    bare = event_to_proto(Event(id="e"))
    assert dict(bare.metadata) == {"ttl": "16", "hop": "0"}


def test_envelope_keys_in_runtime_metadata_do_not_travel() -> None:
    event = Event(
        id="e",
        metadata={"sender": "forged", "loom.correlation_id": "forged", "ok": "1"},
        envelope=Envelope(sender="real"),
    )
    msg = event_to_proto(event)
    assert msg.metadata["sender"] == "real"
    assert "loom.correlation_id" not in msg.metadata
    assert "correlation_id" not in msg.metadata
    assert event_from_proto(msg).metadata == {"ok": "1"}


def test_request_reply_between_old_clients() -> None:
    """The reply to an old requester reaches its mailbox with its correlation id, in the
    spelling an old client reads (the original core lost it here)."""
    request = event_from_proto(
        old_client_event({"loom.sender": "alice", "loom.correlation_id": "q-1"})
    )
    assert reply_topic(request) == "agent.alice.replies"
    reply = Event(id="r", envelope=reply_envelope(request, sender="bob"))
    metadata = event_to_proto(reply).metadata
    assert (metadata["correlation_id"], metadata["sender"]) == ("q-1", "bob")

    explicit = event_from_proto(old_client_event({"sender": "alice", "reply_to": "inbox.a"}))
    assert reply_topic(explicit) == "inbox.a"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ttl", "abc"),
        ("ttl", "-1"),
        ("ttl", "1.5"),
        ("ttl", " 3"),
        ("ttl", "+3"),
        ("ttl", "1_000"),
        ("ttl", "\u0663"),  # an Arabic-Indic digit: int() would take it, the wire does not
        ("ttl", str(U32 + 1)),
        ("loom.ttl", "x"),
        ("hop", "two"),
        ("loom.hop", "99999999999"),
    ],
)
def test_malformed_hop_counts_are_wire_errors(key: str, value: str) -> None:
    with pytest.raises(WireError) as caught:
        event_from_proto(old_client_event({key: value}))
    assert caught.value.field == f"Event.metadata[{key!r}]"
    assert isinstance(caught.value, LoomError)
    assert isinstance(caught.value, ValueError)


def test_prefixed_hop_count_is_read_before_a_bad_unprefixed_one() -> None:
    event = event_from_proto(old_client_event({"loom.ttl": "7", "ttl": "junk"}))
    assert event.envelope.ttl == 7


@pytest.mark.parametrize(
    "traceparent",
    [
        "garbage",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # uppercase
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # 00 has no suffix
        "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ],
)
def test_malformed_traceparent_is_dropped_with_its_tracestate(traceparent: str) -> None:
    typed = event_pb2.Event(
        envelope=event_pb2.Envelope(sender="s", traceparent=traceparent, tracestate="k=v")
    )
    env = event_from_proto(typed).envelope
    assert (env.sender, env.traceparent, env.tracestate) == ("s", "", "")
    # Writing drops it the same way, so a round trip is stable.
    out = event_to_proto(Event(envelope=Envelope(traceparent=traceparent, tracestate="k=v")))
    assert (out.envelope.traceparent, out.envelope.tracestate) == ("", "")
    assert "trace_id" not in out.metadata


def test_future_traceparent_version_is_kept() -> None:
    future = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-more"
    env = event_from_proto(event_pb2.Event(envelope=event_pb2.Envelope(traceparent=future)))
    assert env.envelope.traceparent == future


@pytest.mark.parametrize(
    ("trio", "expected"),
    [
        (
            {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331"},
            TRACEPARENT,  # no flags: sampled
        ),
        (
            {
                "loom.trace_id": "0AF7651916CD43DD8448EB211C80319C",
                "span_id": "B7AD6B7169203331",
                "trace_flags": "1",  # decimal
            },
            TRACEPARENT,
        ),
        (
            {
                "trace_id": "0af7651916cd43dd8448eb211c80319c",
                "span_id": "b7ad6b7169203331",
                "trace_flags": "00",
            },
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        ),
        ({"trace_id": "0af7651916cd43dd8448eb211c80319c"}, ""),  # no span id
        ({"trace_id": "xyz", "span_id": "b7ad6b7169203331"}, ""),
        (
            {
                "trace_id": "0af7651916cd43dd8448eb211c80319c",
                "span_id": "b7ad6b7169203331",
                "trace_flags": "256",
            },
            "",
        ),
        (
            {
                "trace_id": "0af7651916cd43dd8448eb211c80319c",
                "span_id": "b7ad6b7169203331",
                "trace_flags": "zz",
            },
            "",
        ),
    ],
)
def test_trace_trio_becomes_a_traceparent(trio: dict[str, str], expected: str) -> None:
    event = event_from_proto(old_client_event(trio))
    assert event.envelope.traceparent == expected
    assert event.metadata == {}


# ------------------------------------------------------------------ events: values


def test_confidence_is_carried_as_float32() -> None:
    event = Event(id="e", confidence=0.1)
    back = event_from_proto(wire(event_to_proto(event)))
    assert back.confidence != 0.1
    assert math.isclose(back.confidence, 0.1, rel_tol=1e-7)
    # Once normalized, it is stable.
    assert event_from_proto(event_to_proto(back)) == back


def test_unset_confidence_of_an_old_client_is_zero() -> None:
    assert event_from_proto(old_client_event({})).confidence == 0.0


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_confidence_from_the_wire_is_a_wire_error(value: float) -> None:
    with pytest.raises(WireError, match="confidence"):
        event_from_proto(event_pb2.Event(confidence=value))


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (Event(id="e", confidence=math.nan), "Event.confidence"),
        (Event(id="e", confidence=1e300), "Event.confidence"),
        (Event(id="e", priority=2**31), "Event 'e'"),
        (Event(id="e", timestamp_ms=2**63), "Event 'e'"),
        (Event(id="e", envelope=Envelope(ttl=-1)), "Event 'e'"),
        (Event(id="e", envelope=Envelope(hop=2**32)), "Event 'e'"),
        (Event(id="e", source="\udc80"), "Event 'e'"),
        (Event(id="e", metadata={"k": "\ud800"}), "Event 'e'"),
        (Event(id="e", envelope=Envelope(sender="\udc80")), "Event 'e'"),
    ],
)
def test_values_the_wire_cannot_carry_are_wire_errors(event: Event, field: str) -> None:
    with pytest.raises(WireError) as caught:
        event_to_proto(event)
    assert caught.value.field == field


# ------------------------------------------------------------------ deliveries, publishes, QoS


def test_delivery_and_publish() -> None:
    event = Event(id="e", type="t", envelope=Envelope(sender="s"))
    assert delivery_from_proto(delivery_to_proto(Delivery("a.b", event))) == Delivery("a.b", event)
    msg = publish_to_proto("a.c", event)
    assert isinstance(msg, bridge_pb2.Publish)
    assert publish_from_proto(msg) == ("a.c", event)


def test_qos_values_match_both_ways() -> None:
    for qos in QoS:
        assert int(qos_to_proto(qos)) == int(qos)
        assert qos_from_proto(int(qos)) is qos


def test_unknown_qos_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="unknown QoSLevel 7"):
        qos_from_proto(7)


# ------------------------------------------------------------------ tools

descriptors = st.builds(
    ToolDescriptor,
    name=texts,
    description=texts,
    parameters_schema=texts,
    provider=st.sampled_from(ProviderKind),
    metadata=st.dictionaries(texts, texts, max_size=3),
)
calls = st.builds(
    ToolCallRequest,
    id=texts,
    name=texts,
    arguments=texts,
    headers=st.dictionaries(texts, texts, max_size=3),
    timeout_ms=st.integers(0, 2**63 - 1),
    correlation_id=texts,
    qos=st.sampled_from(QoS),
)
outcomes = st.builds(
    ToolCallOutcome,
    id=texts,
    status=st.sampled_from(ToolStatus),
    output=texts,
    error=st.none()
    | st.builds(
        ToolErrorInfo, code=texts, message=texts, details=st.dictionaries(texts, texts, max_size=3)
    ),
    scope_calls=st.integers(min_value=0, max_value=2**62),
)


@given(descriptors)
def test_tool_descriptor_round_trip(tool: ToolDescriptor) -> None:
    msg = tools_pb2.ToolDescriptor.FromString(tool_descriptor_to_proto(tool).SerializeToString())
    assert tool_descriptor_from_proto(msg) == tool


@given(calls)
def test_tool_call_round_trip(call: ToolCallRequest) -> None:
    msg = tools_pb2.ToolCall.FromString(tool_call_to_proto(call).SerializeToString())
    assert tool_call_from_proto(msg) == call


@given(outcomes)
def test_tool_result_round_trip(outcome: ToolCallOutcome) -> None:
    msg = tools_pb2.ToolResult.FromString(tool_result_to_proto(outcome).SerializeToString())
    assert tool_result_from_proto(msg) == outcome


def test_a_result_without_a_scope_count_is_the_original_wire() -> None:
    # An old server sends no count: read as 0, counted as nothing. An outcome with none
    # encodes exactly as before the field was added (an old peer sees the same bytes).
    outcome = ToolCallOutcome(id="1", output='"x"')
    original = tools_pb2.ToolResult(id="1", status=tools_pb2.TOOL_OK, output='"x"')
    assert tool_result_to_proto(outcome).SerializeToString() == original.SerializeToString()
    assert tool_result_from_proto(original).scope_calls == 0


def test_tool_enums_match_the_wire() -> None:
    for provider in ProviderKind:
        assert tools_pb2.ProviderKind.Value(f"PROVIDER_{provider.name}") == provider
    for status in ToolStatus:
        assert tools_pb2.ToolStatus.Value(f"TOOL_{status.name}") == status


def test_empty_error_message_is_kept_apart_from_no_error() -> None:
    with_empty = tool_result_to_proto(ToolCallOutcome(id="1", error=ToolErrorInfo()))
    assert with_empty.HasField("error")
    assert tool_result_from_proto(with_empty).error == ToolErrorInfo()
    assert not tool_result_to_proto(ToolCallOutcome(id="1")).HasField("error")


def test_unknown_tool_enums_are_wire_errors() -> None:
    with pytest.raises(WireError, match="ProviderKind 9"):
        tool_descriptor_from_proto(tools_pb2.ToolDescriptor(name="t", provider=9))  # type: ignore[arg-type]
    with pytest.raises(WireError, match="ToolStatus 12"):
        tool_result_from_proto(tools_pb2.ToolResult(id="1", status=12))  # type: ignore[arg-type]
    with pytest.raises(WireError) as caught:
        tool_call_from_proto(tools_pb2.ToolCall(id="1", qos=3))  # type: ignore[arg-type]
    assert caught.value.field == "ToolCall.qos"


def test_negative_timeout_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="timeout_ms"):
        tool_call_from_proto(tools_pb2.ToolCall(id="1", timeout_ms=-5))
    with pytest.raises(WireError, match="timeout_ms"):
        tool_call_to_proto(ToolCallRequest(id="1", name="t", timeout_ms=-5))


def test_tool_values_the_wire_cannot_carry_are_wire_errors() -> None:
    with pytest.raises(WireError):
        tool_call_to_proto(ToolCallRequest(id="1", name="t", timeout_ms=2**63))
    with pytest.raises(WireError):
        tool_descriptor_to_proto(ToolDescriptor(name="t", metadata={"\udc80": "x"}))
    with pytest.raises(WireError):
        tool_result_to_proto(ToolCallOutcome(id="1", error=ToolErrorInfo(message="\ud800")))


def test_invalid_json_arguments_pass_through_for_the_server_to_judge() -> None:
    call = tool_call_from_proto(tools_pb2.ToolCall(id="1", name="t", arguments="{not json"))
    assert call.arguments == "{not json"


# ------------------------------------------------------------------ bus statistics

counts = st.integers(0, 2**64 - 1)
drops = st.builds(Drops, overflow=counts, closed=counts)
bus_stats = st.builds(
    BusStats,
    published=counts,
    unrouted=counts,
    delivered=counts,
    dropped=drops,
    subscriptions=st.lists(
        st.builds(
            SubscriptionStats,
            id=counts,
            pattern=texts,
            qos=st.sampled_from(QoS),
            matched=counts,
            delivered=counts,
            dropped=drops,
            queued=counts,
            high_water=counts,
            capacity=counts,
            waiting_publishers=counts,
            patterns=st.lists(texts, max_size=3).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    topics=st.lists(
        st.builds(
            TopicStats,
            topic=texts,
            published=counts,
            unrouted=counts,
            delivered=counts,
            dropped=drops,
        ),
        max_size=3,
    ).map(tuple),
    closed=st.booleans(),
)


@given(bus_stats)
def test_bus_stats_round_trip(stats: BusStats) -> None:
    msg = bus_pb2.BusStats.FromString(bus_stats_to_proto(stats).SerializeToString())
    assert bus_stats_from_proto(msg) == stats


@pytest.mark.anyio
async def test_bus_stats_of_a_real_bus_leave_out_what_was_not_asked_for() -> None:
    async with EventBus() as bus, bus.subscribe("a.>", qos=QoS.REALTIME):
        await bus.publish("a.b", Event(type="t"))
        stats = bus.statistics()
    msg = bus_stats_to_proto(stats, include_subscriptions=False)
    assert (msg.published, len(msg.subscriptions), len(msg.topics)) == (1, 0, 1)
    # The tiers' totals are the process's own (metrics): not on the wire.
    assert bus_stats_from_proto(bus_stats_to_proto(stats)) == msgspec.structs.replace(
        stats, tiers=()
    )


def test_unknown_qos_in_bus_stats_is_a_wire_error() -> None:
    msg = bus_pb2.BusStats(subscriptions=[bus_pb2.SubscriptionStats(qos=5)])  # type: ignore[arg-type]
    with pytest.raises(WireError) as caught:
        bus_stats_from_proto(msg)
    assert caught.value.field == "SubscriptionStats.qos"
