"""The Python floor of benchmarks/bridge.py: the least any Python bridge pays per event.

A second baseline beside the raw echo. Three processes, as in the Loom run: a publisher, a
middle server and a subscriber, over plain grpc.aio and asyncio (no anyio, no Loom). Per event
and hop it does only what a bridge between Python agents cannot skip: the publisher builds a
protobuf message from a msgspec Struct; the middle parses, makes a Struct, queues it to the
subscriber's stream and builds a protobuf message again; the subscriber parses, makes a Struct
and calls a handler. There is no routing, no envelope, no flow control, no acks, no
supervision: so it is an upper bound for a Python bridge on this machine, and Loom's stream
figures are read against it as well as against the raw echo (which parses on one side only).

Run as a script it is one role: ``middle`` (prints its port, serves until stdin closes),
``sub PORT N`` (prints ``ready``, then ``{"end": ...}``), ``pub PORT N PER`` (prints
``{"start": ...}``). Imported, :func:`floor_events_per_s` runs the three and returns the rate.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc
import msgspec

from loom.bridge._generated import bridge_pb2, event_pb2

SERVICE = "bench.Floor"
TIMEOUT = 120.0


class _Event(msgspec.Struct, frozen=True, gc=False):
    id: str
    type: str
    timestamp_ms: int
    payload: bytes


def _identity(data: bytes) -> bytes:
    return data


def _to_proto(event: _Event) -> event_pb2.Event:
    return event_pb2.Event(
        id=event.id, type=event.type, timestamp_ms=event.timestamp_ms, payload=event.payload
    )


def _from_proto(msg: event_pb2.Event) -> _Event:
    return _Event(msg.id, msg.type, msg.timestamp_ms, msg.payload)


async def _middle() -> None:
    queue: asyncio.Queue[list[tuple[str, _Event]]] = asyncio.Queue(64)

    async def publish(requests: AsyncIterator[bytes], context: object) -> bytes:
        async for data in requests:
            msg = bridge_pb2.ClientEvent.FromString(data)
            if msg.HasField("publish_batch"):
                publishes = list(msg.publish_batch.publishes)
            else:
                publishes = [msg.publish]
            await queue.put([(p.topic, _from_proto(p.event)) for p in publishes])
        return b""

    async def subscribe(request: bytes, context: object) -> AsyncIterator[bytes]:
        while True:
            events = await queue.get()
            deliveries = [bridge_pb2.Delivery(topic=t, event=_to_proto(e)) for t, e in events]
            if len(deliveries) == 1:
                frame = bridge_pb2.ServerEvent(delivery=deliveries[0])
            else:
                batch = bridge_pb2.DeliveryBatch(deliveries=deliveries)
                frame = bridge_pb2.ServerEvent(delivery_batch=batch)
            yield frame.SerializeToString()

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Publish": grpc.stream_unary_rpc_method_handler(publish, _identity, _identity),
            "Subscribe": grpc.unary_stream_rpc_method_handler(subscribe, _identity, _identity),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(grace=1)


async def _publisher(port: int, n: int, per_message: int) -> None:
    events = [_Event(f"{i:032x}", "bench", 0, b"x" * 32) for i in range(n)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_unary(
            f"/{SERVICE}/Publish", request_serializer=_identity, response_deserializer=_identity
        )()
        start = time.monotonic()
        for i in range(0, n, per_message):
            chunk = events[i : i + per_message]
            publishes = [bridge_pb2.Publish(topic="t", event=_to_proto(e)) for e in chunk]
            if per_message == 1:
                frame = bridge_pb2.ClientEvent(publish=publishes[0])
            else:
                frame = bridge_pb2.ClientEvent(
                    publish_batch=bridge_pb2.PublishBatch(publishes=publishes)
                )
            await call.write(frame.SerializeToString())
        await call.done_writing()
        await call
    print(json.dumps({"start": start}), flush=True)


async def _subscriber(port: int, n: int) -> None:
    seen = 0
    size = 0

    def handle(event: _Event) -> None:
        nonlocal seen, size
        seen += 1
        size += len(event.payload)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_stream(
            f"/{SERVICE}/Subscribe", request_serializer=_identity, response_deserializer=_identity
        )(b"")
        await channel.channel_ready()
        print("ready", flush=True)
        async for data in call:
            frame = bridge_pb2.ServerEvent.FromString(data)
            if frame.HasField("delivery_batch"):
                for delivery in frame.delivery_batch.deliveries:
                    handle(_from_proto(delivery.event))
            else:
                handle(_from_proto(frame.delivery.event))
            if seen >= n:
                break
        end = time.monotonic()
        call.cancel()
    assert size == 32 * n
    print(json.dumps({"end": end}), flush=True)


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{proc.args!r} ended (code {proc.wait(timeout=TIMEOUT)})")
    return line


def floor_events_per_s(per_message: int, events: int) -> float:
    """Events per second through the floor pipeline, ``per_message`` events per gRPC message."""
    middle = _spawn("middle")
    try:
        port = _line(middle).strip()
        sub = _spawn("sub", port, str(events))
        try:
            if _line(sub).strip() != "ready":
                raise RuntimeError("the floor subscriber did not get ready")
            pub = _spawn("pub", port, str(events), str(per_message))
            try:
                start = json.loads(_line(pub))["start"]
                end = json.loads(_line(sub))["end"]
            finally:
                pub.wait(timeout=TIMEOUT)
        finally:
            sub.wait(timeout=TIMEOUT)
    finally:
        assert middle.stdin is not None
        middle.stdin.close()
        middle.wait(timeout=TIMEOUT)
    return float(events / (end - start))


def main(argv: list[str]) -> None:
    match argv:
        case ["middle"]:
            asyncio.run(_middle())
        case ["sub", port, n]:
            asyncio.run(_subscriber(int(port), int(n)))
        case ["pub", port, n, per_message]:
            asyncio.run(_publisher(int(port), int(n), int(per_message)))
        case _:
            raise SystemExit(f"usage: see the module docs; not {argv!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
