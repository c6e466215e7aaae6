"""Helpers of the server tests: a real server on 127.0.0.1:0, and an *old client* made of the
raw generated stubs only, speaking section 1 of the wire contract as the original SDK did."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import grpc
import grpc.aio

from loom.bridge import BridgeServer, Limits, TLSConfig
from loom.bridge._generated import (
    bridge_pb2,
    bridge_pb2_grpc,
    bus_pb2_grpc,
    event_pb2,
    tools_pb2,
    tools_pb2_grpc,
)
from loom.runtime import AgentRuntime, EventBus
from loom.runtime.tools import ToolRegistry

EventStreamCall = grpc.aio.StreamStreamCall[bridge_pb2.ClientEvent, bridge_pb2.ServerEvent]


@dataclass
class Served:
    bus: EventBus
    runtime: AgentRuntime
    server: BridgeServer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@asynccontextmanager
async def serving(
    *,
    tools: ToolRegistry | None = None,
    limits: Limits | None = None,
    token: str | None = None,
    tls: TLSConfig | None = None,
    grace_s: float = 1.0,
    admin_token: str | None = None,
    stale_after_s: float = 15.0,
) -> AsyncIterator[Served]:
    try:
        async with (
            EventBus(drain_grace=0.5) as bus,
            AgentRuntime(
                bus, tools=tools, stop_timeout_s=1.0, stale_after_s=stale_after_s
            ) as runtime,
            BridgeServer(
                runtime,
                token=token,
                tls=tls,
                limits=limits,
                grace_s=grace_s,
                admin_token=admin_token,
            ) as server,
        ):
            yield Served(bus, runtime, server)
    finally:
        # gRPC's asyncio layer is bound to the loop that made its objects and lets go of it
        # only when the last of them is freed: free them now, while this loop still runs, or
        # the next test's loop meets a poller of this closed one ("Event loop is closed").
        gc.collect()


@asynccontextmanager
async def channel(
    target: str,
    *,
    token: str | None = None,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> AsyncIterator[grpc.aio.Channel]:
    interceptors: list[grpc.aio.ClientInterceptor] = []
    if credentials is not None:
        ch = grpc.aio.secure_channel(target, credentials, options=options)
    else:
        ch = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    try:
        yield ch
    finally:
        await ch.close(grace=None)
        del ch
        gc.collect()


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def descriptor(
    name: str, schema: Mapping[str, Any] | str | None = None, description: str = ""
) -> tools_pb2.ToolDescriptor:
    text = schema if isinstance(schema, str) else json.dumps(schema) if schema is not None else ""
    return tools_pb2.ToolDescriptor(
        name=name, description=description or f"the {name} tool", parameters_schema=text
    )


def event(
    type: str = "test",
    payload: bytes = b"",
    metadata: Mapping[str, str] | None = None,
    envelope: event_pb2.Envelope | None = None,
) -> event_pb2.Event:
    msg = event_pb2.Event(type=type, payload=payload, metadata=dict(metadata or {}))
    if envelope is not None:
        msg.envelope.CopyFrom(envelope)
    return msg


class OldAgent:
    """An agent written against section 1 only: RegisterAgent, then EventStream with the ack
    handshake, single publishes, ping, tool_result. Reads frames in the test's task."""

    def __init__(
        self, ch: grpc.aio.Channel, agent_id: str, *, metadata: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.id = agent_id
        self.bridge = bridge_pb2_grpc.BridgeStub(ch)
        self.tools = tools_pb2_grpc.ToolServiceStub(ch)
        self.bus = bus_pb2_grpc.EventBusStub(ch)
        self.metadata = tuple(metadata)
        self.call: EventStreamCall | None = None

    async def register(
        self,
        topics: Sequence[str] = (),
        tools: Sequence[tools_pb2.ToolDescriptor] = (),
    ) -> bridge_pb2.AgentRegisterResponse:
        request = bridge_pb2.AgentRegisterRequest(
            agent_id=self.id, subscribed_topics=list(topics), tools=list(tools)
        )
        return await self.bridge.RegisterAgent(request, metadata=self.metadata)

    async def open(self, *, handshake: bool = True) -> EventStreamCall:
        self.call = self.bridge.EventStream(metadata=self.metadata)
        if handshake:
            await self.send(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=self.id)))
            # A ping round trip proves the handshake was accepted and the session runs.
            await self.ping(1)
        return self.call

    async def connect(
        self, topics: Sequence[str] = (), tools: Sequence[tools_pb2.ToolDescriptor] = ()
    ) -> OldAgent:
        await self.register(topics, tools)
        await self.open()
        return self

    async def send(self, msg: bridge_pb2.ClientEvent) -> None:
        assert self.call is not None
        await self.call.write(msg)

    async def publish(self, topic: str, ev: event_pb2.Event) -> None:
        await self.send(bridge_pb2.ClientEvent(publish=bridge_pb2.Publish(topic=topic, event=ev)))

    async def ping(self, ts: int) -> None:
        await self.send(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=ts)))
        frame = await self.next("pong")
        assert frame.pong.timestamp_ms == ts
        assert frame.pong.status == "ok"

    async def read(self, timeout: float = 5.0) -> bridge_pb2.ServerEvent:
        assert self.call is not None
        with anyio.fail_after(timeout):
            msg = await self.call.read()
        assert isinstance(msg, bridge_pb2.ServerEvent), f"stream ended: {msg!r}"
        return msg

    async def next(self, kind: str, timeout: float = 5.0) -> bridge_pb2.ServerEvent:
        """The next frame of ``kind``; frames of other kinds before it are an error."""
        frame = await self.read(timeout)
        got = frame.WhichOneof("msg")
        assert got == kind, f"expected {kind}, got {frame}"
        return frame

    async def answer(self, call_id: str, output: Any) -> None:
        result = tools_pb2.ToolResult(
            id=call_id, status=tools_pb2.TOOL_OK, output=json.dumps(output)
        )
        await self.send(bridge_pb2.ClientEvent(tool_result=result))

    async def close(self) -> None:
        if self.call is not None:
            await self.call.done_writing()
            self.call.cancel()
            self.call = None


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for server-side state that has no event of its own to wait on (counters the
    server updates as a stream ends); bounded, polled at a short interval."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110  (no event exists for these counters)
            await anyio.sleep(0.005)


async def status_of(call: EventStreamCall) -> tuple[grpc.StatusCode, str]:
    """Read the stream to its end and return its status."""
    with anyio.fail_after(5):
        try:
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return await call.code(), await call.details()
