"""Events packed for the wire (``STREAM_FEATURE_PACKED_EVENTS``): pure functions, no I/O.

With the feature, a ``publish_batch`` or ``delivery_batch`` carries its events as one
MessagePack array of ``[topic, event]`` entries (``PublishBatch.packed``), each event in the
encoding msgspec gives :class:`loom.runtime.Event` (as between cluster nodes,
``cluster/_wire.py``). Why: a protobuf ``Event`` is built and read one field at a time from
Python, several attribute sets and reads per event on each side of each hop; a pack is
written by one C call per event and read by one per frame, straight into runtime Structs.
That per-event work was most of what the bridge hops cost (``docs/performance.md``).

The rules are those of the protobuf path (``bridge/_convert.py``), so that an event reaches
the other side the same whichever way it went, except that ``confidence`` keeps its float64
(protobuf rounds it to float32):

* Writing (:func:`pack_event`) refuses what protobuf would (:class:`WireError`): a
  non-finite or float32-overflowing ``confidence``, ``priority`` outside int32,
  ``timestamp_ms`` outside int64, ``ttl``/``hop`` outside uint32, a string with lone
  surrogates. Envelope keys in the event's own metadata do not travel, and a malformed trace
  context is dropped with its ``tracestate``.
* Reading (:func:`unpack_events`, then :func:`checked` per entry) refuses a pack that does
  not decode to the entries it claims (the whole frame), and an entry with those values out
  of range (that entry); it strips envelope keys from metadata and drops a malformed trace
  context, as :func:`~loom.bridge._convert.event_from_proto` does.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from loom.runtime import Envelope, Event

from ._convert import _F32_MAX, _RESERVED, _U32_MAX, _checked_trace
from ._errors import WireError

__all__ = ["checked", "pack", "pack_event", "unpack_events"]

_I32: Final = 2**31
_I64: Final = 2**63
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[str, Event]]).decode


def _plain(event: Event) -> bool:
    """Whether ``event`` goes as it is: every value in range (NaN fails every comparison), no
    metadata to look through, no trace context to check. The common case, in one call: this
    runs for every event on both sides of each hop."""
    envelope = event.envelope
    return (
        type(event.payload) is bytes
        and -_F32_MAX <= event.confidence <= _F32_MAX
        and -_I32 <= event.priority < _I32
        and -_I64 <= event.timestamp_ms < _I64
        and 0 <= envelope.ttl <= _U32_MAX
        and 0 <= envelope.hop <= _U32_MAX
        and not event.metadata
        and not envelope.traceparent
        and not envelope.tracestate
    )


def _out_of_range(event: Event) -> str:
    """What in ``event`` the wire cannot carry, or ``""``."""
    confidence = event.confidence
    envelope = event.envelope
    payload: object = event.payload  # typed bytes; untyped callers pass anything
    if not isinstance(payload, bytes):
        # msgpack would encode a dict or a str as such, and the far side would refuse the
        # whole frame: refused here, for this publish alone, as the protobuf path refuses it.
        return f"payload is {type(payload).__name__}, not bytes"
    if not (math.isfinite(confidence) and abs(confidence) <= _F32_MAX):
        return f"confidence {confidence!r} is not a finite float32"
    if not -_I32 <= event.priority < _I32:
        return f"priority {event.priority} is outside int32"
    if not -_I64 <= event.timestamp_ms < _I64:
        return f"timestamp_ms {event.timestamp_ms} is outside int64"
    if not (0 <= envelope.ttl <= _U32_MAX and 0 <= envelope.hop <= _U32_MAX):
        return f"envelope ttl {envelope.ttl} / hop {envelope.hop} is outside uint32"
    return ""


def _cleaned(event: Event) -> Event:
    """``event`` without envelope keys in its metadata and without a malformed trace
    context (itself, not a copy, when it has neither: the common case)."""
    metadata = event.metadata
    if metadata and not metadata.keys().isdisjoint(_RESERVED):
        metadata = {k: v for k, v in metadata.items() if k not in _RESERVED}
        event = msgspec.structs.replace(event, metadata=metadata)
    envelope = event.envelope
    if envelope.traceparent or envelope.tracestate:
        traceparent, tracestate = _checked_trace(envelope.traceparent, envelope.tracestate)
        if traceparent != envelope.traceparent or tracestate != envelope.tracestate:
            envelope = msgspec.structs.replace(
                envelope, traceparent=traceparent, tracestate=tracestate
            )
            event = msgspec.structs.replace(event, envelope=envelope)
    return event


class _Stamp:
    """The last envelope stamped with a sender, and the result: an agent's events mostly
    share one envelope (the default one, or its turn's), and a frozen Struct can be reused,
    so the stamped copy is made once rather than per event."""

    __slots__ = ("original", "sender", "stamped")

    def __init__(self) -> None:
        self.original: Envelope | None = None
        self.sender = ""
        self.stamped: Envelope | None = None


_stamp = _Stamp()


def pack_event(topic: str, event: Event, sender: str = "") -> bytes:
    """One packed entry: ``[topic, event]``, the event with ``sender`` as its envelope's
    sender when it names none (as the server would stamp it).

    Raises:
        WireError: ``event`` cannot go on the wire (see the module).
    """
    if not _plain(event):
        problem = _out_of_range(event)
        if problem:
            raise WireError(f"Event {event.id!r}", problem)
        event = _cleaned(event)
    envelope = event.envelope
    if sender and not envelope.sender:
        stamp = _stamp
        if stamp.original is not envelope or stamp.sender != sender:
            stamp.stamped = msgspec.structs.replace(envelope, sender=sender)
            stamp.original, stamp.sender = envelope, sender
        event = msgspec.structs.replace(event, envelope=stamp.stamped)
    try:
        return _encode((topic, event))
    except (UnicodeEncodeError, OverflowError, TypeError, msgspec.EncodeError) as exc:
        raise WireError(f"Event {event.id!r}", str(exc)) from exc


def pack(entries: list[bytes]) -> bytes:
    """The ``packed`` field carrying ``entries`` (made by :func:`pack_event`), in order."""
    n = len(entries)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 0x10000:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(entries)


def unpack_events(data: bytes, count: int) -> list[tuple[str, Event]]:
    """The ``[topic, event]`` entries of a ``packed`` field that says it holds ``count``;
    each still to be :func:`checked`.

    Raises:
        WireError: ``data`` is not such an array of exactly ``count`` entries.
    """
    try:
        entries = _decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise WireError("packed", f"not an array of [topic, event] entries: {exc}") from exc
    if len(entries) != count:
        raise WireError("packed", f"{len(entries)} entries, not the {count} its count says")
    return entries


def checked(event: Event) -> Event:
    """A read entry's event as the runtime takes it (see the module).

    Raises:
        WireError: a value out of range (see the module).
    """
    if _plain(event):
        return event
    problem = _out_of_range(event)
    if problem:
        raise WireError(f"Event {event.id!r}", problem)
    return _cleaned(event)
