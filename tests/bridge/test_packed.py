"""Packed events (``STREAM_FEATURE_PACKED_EVENTS``, ``bridge/_packed.py``): pure round trips,
and the same event whichever way (protobuf or packed) it crossed."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loom.bridge._convert import event_from_proto, event_to_proto
from loom.bridge._errors import WireError
from loom.bridge._generated import event_pb2
from loom.bridge._packed import checked, pack, pack_event, unpack_events
from loom.runtime import Envelope, Event

from .test_convert import TRACEPARENT, events, texts


def through(entries: list[bytes]) -> list[tuple[str, Event]]:
    """``entries`` packed and read back as the other side reads them."""
    return [(t, checked(e)) for t, e in unpack_events(pack(entries), len(entries))]


@given(st.lists(st.tuples(texts, events), max_size=20))
def test_round_trip(pairs: list[tuple[str, Event]]) -> None:
    assert through([pack_event(t, e) for t, e in pairs]) == pairs


@given(events)
def test_the_same_event_as_through_protobuf(event: Event) -> None:
    # A section-2 peer gets the same event from either encoding.
    via_proto = event_from_proto(
        event_pb2.Event.FromString(event_to_proto(event, mirror=False).SerializeToString())
    )
    assert through([pack_event("t", event)]) == [("t", via_proto)]


@pytest.mark.parametrize("n", [0, 1, 15, 16, 300, 65_535, 65_536])
def test_array_headers_of_every_width(n: int) -> None:
    entry = pack_event("t", Event(id="e"))
    assert len(unpack_events(pack([entry] * n), n)) == n


def test_sender_is_stamped_only_when_missing() -> None:
    [(_, bare)] = through([pack_event("t", Event(id="e"), "me")])
    [(_, own)] = through([pack_event("t", Event(id="e", envelope=Envelope(sender="x")), "me")])
    assert (bare.envelope.sender, own.envelope.sender) == ("me", "x")


def test_envelope_keys_in_metadata_do_not_travel_either_way() -> None:
    event = Event(id="e", metadata={"sender": "forged", "loom.hop": "9", "ok": "1"})
    [(_, got)] = through([pack_event("t", event)])
    assert got.metadata == {"ok": "1"}
    # A peer that packs them anyway: stripped on reading too.
    raw = msgspec.msgpack.encode([("t", event)])
    [(_, read)] = unpack_events(raw, 1)
    assert checked(read).metadata == {"ok": "1"}


def test_a_malformed_trace_context_is_dropped_with_its_state() -> None:
    bad = Event(id="e", envelope=Envelope(sender="s", traceparent="junk", tracestate="k=v"))
    good = Event(id="g", envelope=Envelope(traceparent=TRACEPARENT, tracestate="k=v"))
    [(_, b), (_, g)] = through([pack_event("t", bad), pack_event("t", good)])
    assert (b.envelope.sender, b.envelope.traceparent, b.envelope.tracestate) == ("s", "", "")
    assert (g.envelope.traceparent, g.envelope.tracestate) == (TRACEPARENT, "k=v")
    raw = msgspec.msgpack.encode([("t", bad)])  # read side too
    assert checked(unpack_events(raw, 1)[0][1]).envelope.traceparent == ""


@pytest.mark.parametrize(
    "event",
    [
        Event(id="e", confidence=math.nan),
        Event(id="e", confidence=math.inf),
        Event(id="e", confidence=1e39),  # over float32, as protobuf refuses it
        Event(id="e", priority=2**31),
        Event(id="e", timestamp_ms=2**63),
        Event(id="e", envelope=Envelope(ttl=2**32)),
        Event(id="e", envelope=Envelope(hop=-1)),
        Event(id="e", type="\ud800"),  # a lone surrogate
    ],
)
def test_what_protobuf_refuses_is_refused_both_ways(event: Event) -> None:
    with pytest.raises(WireError):
        event_to_proto(event)
    with pytest.raises(WireError):
        pack_event("t", event)
    if event.type.isascii():  # (msgspec itself cannot write the surrogate)
        with pytest.raises(WireError):
            checked(unpack_events(msgspec.msgpack.encode([("t", event)]), 1)[0][1])


@pytest.mark.parametrize("payload", [{"a": 1}, "text", 7])
def test_a_payload_that_is_not_bytes_is_refused_for_that_publish(payload: object) -> None:
    # msgpack would write it as what it is, and the far side would refuse the whole frame.
    event = Event(id="e", payload=payload)  # type: ignore[arg-type]
    with pytest.raises(WireError, match=f"payload is {type(payload).__name__}, not bytes"):
        pack_event("t", event)


@pytest.mark.parametrize(
    ("data", "count"),
    [
        (b"", 1),
        (b"\xc1", 1),  # never used in MessagePack
        (msgspec.msgpack.encode([("t", {"id": 1})]), 1),  # not an event
        (msgspec.msgpack.encode([["t"]]), 1),  # not a pair
        (msgspec.msgpack.encode([("t", {"type": b"\xff"})]), 1),  # bytes for a str
        (pack([pack_event("t", Event(id="e"))] * 2), 3),  # fewer than it says
        (pack([pack_event("t", Event(id="e"))] * 2), 1),  # more than it says
    ],
)
def test_a_pack_that_does_not_read_is_refused_whole(data: bytes, count: int) -> None:
    with pytest.raises(WireError) as caught:
        unpack_events(data, count)
    assert caught.value.field == "packed"
