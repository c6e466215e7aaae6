"""The event model: Event, Envelope, Delivery and the envelope helpers."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from loom.runtime import DEFAULT_TTL, Delivery, Envelope, Event, LoomError, TTLExpired
from loom.runtime.lowlevel import mailbox_topic, now_ms, reply_envelope, reply_topic, step_hop


def test_an_event_gets_an_id_and_a_timestamp() -> None:
    before = now_ms()
    first, second = Event(), Event()
    after = now_ms()
    assert first.id != second.id
    assert first.id < second.id
    assert uuid.UUID(first.id).version == 7
    assert before <= first.timestamp_ms <= after
    assert first.envelope == Envelope()
    assert first.envelope.ttl == DEFAULT_TTL == 16
    assert (first.confidence, first.priority, first.tags, first.metadata) == (1.0, 0, (), {})


def test_events_and_envelopes_are_frozen() -> None:
    event = Event(type="t")
    with pytest.raises(AttributeError):
        event.type = "u"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        event.envelope.hop = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        Event("positional")  # type: ignore[call-arg]


@pytest.mark.parametrize("codec", [msgspec.json, msgspec.msgpack])
def test_an_event_round_trips_through_json_and_msgpack(codec: object) -> None:
    event = Event(
        type="task.created",
        source="planner",
        metadata={"k": "v"},
        payload=b"\x00\xffbytes",
        confidence=0.25,
        tags=("a", "b"),
        priority=3,
        envelope=Envelope(thread_id="th", sender="alice", reply_to="x.y", hop=2, ttl=5),
    )
    encode = codec.encode  # type: ignore[attr-defined]
    decode = codec.decode  # type: ignore[attr-defined]
    assert decode(encode(event), type=Event) == event
    delivery = Delivery("a.b", event)
    assert decode(encode(delivery), type=Delivery) == delivery


def test_an_envelope_omits_its_defaults_on_the_wire() -> None:
    assert msgspec.json.encode(Envelope()) == b"{}"
    assert msgspec.json.decode(b"{}", type=Envelope) == Envelope()
    assert msgspec.json.encode(Envelope(hop=1)) == b'{"hop":1}'


def test_the_mailbox_topic() -> None:
    assert mailbox_topic("alice") == "agent.alice.replies"


def test_reply_topic_prefers_reply_to() -> None:
    request = Event(envelope=Envelope(sender="alice", reply_to="jobs.42.result"))
    assert reply_topic(request) == "jobs.42.result"


def test_reply_topic_falls_back_to_the_senders_mailbox() -> None:
    assert reply_topic(Event(envelope=Envelope(sender="alice"))) == "agent.alice.replies"


def test_reply_topic_without_a_sender_or_reply_to_is_an_error() -> None:
    request = Event()
    with pytest.raises(ValueError, match=request.id):
        reply_topic(request)


def test_reply_envelope_keeps_thread_correlation_and_trace() -> None:
    request = Event(
        envelope=Envelope(
            thread_id="th-1",
            correlation_id="corr-9",
            sender="alice",
            reply_to="somewhere",
            ttl=7,
            hop=4,
            traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            tracestate="vendor=1",
        )
    )
    assert reply_envelope(request, sender="bob") == Envelope(
        thread_id="th-1",
        correlation_id="corr-9",
        sender="bob",
        ttl=7,
        hop=0,
        traceparent=request.envelope.traceparent,
        tracestate="vendor=1",
    )


def test_reply_envelope_correlates_on_the_request_id_when_it_had_none() -> None:
    request = Event(envelope=Envelope(thread_id="th-1", sender="alice"))
    env = reply_envelope(request, sender="bob")
    assert env.correlation_id == request.id
    assert env.thread_id == "th-1"
    assert env.reply_to == ""


def test_step_hop_counts_hops_until_the_budget_is_used() -> None:
    event = Event(type="t", payload=b"p", envelope=Envelope(ttl=3, sender="a"))
    for expected in (1, 2, 3):
        event = step_hop(event)
        assert event.envelope.hop == expected
    assert (event.type, event.payload, event.envelope.sender, event.envelope.ttl) == (
        "t",
        b"p",
        "a",
        3,
    )
    with pytest.raises(TTLExpired) as info:
        step_hop(event)
    err = info.value
    assert isinstance(err, LoomError)
    assert (err.event_id, err.ttl, err.hop) == (event.id, 3, 3)
    assert "3 hops taken of a budget of 3" in str(err)


def test_step_hop_leaves_the_original_alone() -> None:
    event = Event()
    stepped = step_hop(event)
    assert event.envelope.hop == 0
    assert stepped.envelope.hop == 1
    assert stepped.id == event.id


def test_the_default_budget_allows_sixteen_hops() -> None:
    event = Event()
    for _ in range(DEFAULT_TTL):
        event = step_hop(event)
    with pytest.raises(TTLExpired):
        step_hop(event)


def test_a_zero_budget_is_expired_at_once() -> None:
    with pytest.raises(TTLExpired) as info:
        step_hop(Event(envelope=Envelope(ttl=0)))
    assert (info.value.ttl, info.value.hop) == (0, 0)
