"""Random and malformed input at a live server: whatever a stream sends (valid frames in any
order, out-of-range values, garbage bytes), the server answers or ends that stream, and a good
client still works afterwards."""

from __future__ import annotations

import asyncio
import logging

import anyio
import grpc
import grpc.aio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.bridge._generated import bridge_pb2, event_pb2, tools_pb2

from ._server_harness import OldAgent, channel, descriptor, event, serving

pytestmark = pytest.mark.anyio

_text = st.text(max_size=12)
_topic = st.one_of(
    st.sampled_from(["a.b", "a.*", "a.>", ">", "fuzz.x", "agent.fuzz.replies"]), _text
)
_int32 = st.integers(-(2**31), 2**31 - 1)
_u32 = st.integers(0, 2**32 - 1)


def _event() -> st.SearchStrategy[event_pb2.Event]:
    metadata = st.dictionaries(
        st.sampled_from(["ttl", "hop", "loom.ttl", "sender", "loom.sender", "trace_id", "x"]),
        st.one_of(st.just("fuzz"), st.just("7"), _text),
        max_size=3,
    )
    return st.builds(
        event_pb2.Event,
        type=_text,
        payload=st.binary(max_size=32),
        metadata=metadata,
        confidence=st.floats(width=32),
        priority=_int32,
    )


_publish = st.builds(bridge_pb2.Publish, topic=_topic, event=_event())
_frames = st.one_of(
    st.builds(lambda p: bridge_pb2.ClientEvent(publish=p), _publish),
    st.builds(
        lambda ps: bridge_pb2.ClientEvent(publish_batch=bridge_pb2.PublishBatch(publishes=ps)),
        st.lists(_publish, max_size=4),
    ),
    st.builds(
        lambda t: bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=t)),
        st.integers(-(2**63), 2**63 - 1),
    ),
    st.builds(lambda m: bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=m)), _text),
    st.builds(
        lambda i, s: bridge_pb2.ClientEvent(tool_result=tools_pb2.ToolResult(id=i, status=s)),
        _text,
        _int32,
    ),
    st.builds(
        lambda f, b, w: bridge_pb2.ClientEvent(
            hello=bridge_pb2.StreamHello(features=f, max_batch_events=b, publish_window=w)
        ),
        st.lists(st.integers(-3, 5), max_size=4),
        _u32,
        _u32,
    ),
    st.builds(
        lambda p, q, t, b: bridge_pb2.ClientEvent(
            subscribe=bridge_pb2.SubscribeRequest(pattern=p, qos=q, event_types=t, buffer_size=b)
        ),
        _topic,
        st.integers(-2, 4),
        st.lists(_text, max_size=2),
        _u32,
    ),
    st.builds(
        lambda i: bridge_pb2.ClientEvent(
            unsubscribe=bridge_pb2.UnsubscribeRequest(subscription_id=i)
        ),
        st.integers(0, 2**64 - 1),
    ),
    st.builds(
        lambda p: bridge_pb2.ClientEvent(unsubscribe=bridge_pb2.UnsubscribeRequest(pattern=p)),
        _topic,
    ),
    st.just(bridge_pb2.ClientEvent()),
)
# A frame is a valid message, or raw bytes (which may or may not parse as one).
_wire = st.one_of(_frames.map(lambda f: f.SerializeToString()), st.binary(max_size=40))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(frames=st.lists(_wire, max_size=12), handshake=st.booleans())
async def test_random_frames_never_break_the_server(frames: list[bytes], handshake: bool) -> None:
    errors = _Errors()
    logging.getLogger("loom.bridge").addHandler(errors)
    try:
        await _throw(frames, handshake, errors)
    finally:
        logging.getLogger("loom.bridge").removeHandler(errors)


class _Errors(logging.Handler):
    """Collects what the server logs at ERROR: a frame it failed to handle."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _throw(frames: list[bytes], handshake: bool, errors: _Errors) -> None:
    async with serving() as s, channel(s.target) as ch:
        await OldAgent(ch, "fuzz").register(topics=["a.>"], tools=[descriptor("fuzz.t")])
        raw = ch.stream_stream(
            "/loom.v1.Bridge/EventStream",
            request_serializer=lambda b: b,
            response_deserializer=bridge_pb2.ServerEvent.FromString,
        )
        call = raw()
        code = grpc.StatusCode.OK
        with anyio.fail_after(10):
            try:
                if handshake:
                    ack = bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id="fuzz"))
                    await call.write(ack.SerializeToString())
                for frame in frames:
                    await call.write(frame)
                await call.done_writing()
                while await call.read() is not grpc.aio.EOF:
                    pass
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            except (grpc.aio.UsageError, asyncio.InvalidStateError):
                pass  # we wrote after the server had ended the call
        call.cancel()
        # The stream may end with a status; never with one that says a handler crashed.
        # (INTERNAL may come from the client library itself, writing as the call ends.)
        assert code is not grpc.StatusCode.UNKNOWN
        assert not errors.records, [r.getMessage() for r in errors.records]

        # A good client is served as ever.
        good = await OldAgent(ch, "good").connect(topics=["check.>"])
        await good.publish("check.one", event("ok"))
        assert (await good.next("delivery")).delivery.topic == "check.one"
        result = await good.bridge.ForwardToolCall(tools_pb2.ToolCall(name="nope"))
        assert result.status == tools_pb2.TOOL_NOT_FOUND
        await good.ping(11)
        assert s.server.statistics().pending_tool_calls == 0
