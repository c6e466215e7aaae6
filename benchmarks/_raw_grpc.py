"""The plain grpc.aio baselines of benchmarks/bridge.py.

Run as a script it is the baseline *server*: a raw echo service (no Loom) that prints its
bound port and serves until stdin closes. Imported, it gives the *client* measurements:

* ``raw_batched_events_per_s``: a bidirectional stream echoing messages of 100 serialized
  ``loom.v1`` events each; the client parses what comes back and touches every event.
* ``raw_unbatched_msgs_per_s``: the same with one event per message.
* ``raw_unary_p50_us``: sequential unary round trips of a small message.

The server echoes the bytes it receives without parsing them: that is the plain thing, and the
floor Loom's bridge (which parses, routes and re-encodes) is measured against.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import grpc

from loom.bridge._generated import bridge_pb2, event_pb2

SERVICE = "bench.Echo"


def _identity(data: bytes) -> bytes:
    return data


async def _serve() -> None:
    async def stream(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message

    async def unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Stream": grpc.stream_stream_rpc_method_handler(stream, _identity, _identity),
            "Unary": grpc.unary_unary_rpc_method_handler(unary, _identity, _identity),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # serve until the parent closes stdin
    await server.stop(grace=1)


def start_server() -> tuple[subprocess.Popen[str], int]:
    """Start the baseline server in its own process; return it and its port."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, port


def stop_server(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def _events_message(per_message: int) -> bytes:
    publishes = [
        bridge_pb2.Publish(
            topic="bench.events",
            event=event_pb2.Event(id=f"e{i}", type="bench", payload=b"x" * 32),
        )
        for i in range(per_message)
    ]
    if per_message == 1:
        return bridge_pb2.ClientEvent(publish=publishes[0]).SerializeToString()
    batch = bridge_pb2.PublishBatch(publishes=publishes)
    return bridge_pb2.ClientEvent(publish_batch=batch).SerializeToString()


async def stream_events_per_s(port: int, per_message: int, events: int) -> float:
    """Events per second through the raw echo, ``per_message`` events per gRPC message."""
    message = _events_message(per_message)
    messages = events // per_message
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(
            f"/{SERVICE}/Stream", request_serializer=_identity, response_deserializer=_identity
        )()
        received = 0
        touched = 0
        start = time.perf_counter()

        async def write() -> None:
            for _ in range(messages):
                await call.write(message)
            await call.done_writing()

        writer = asyncio.ensure_future(write())  # a baseline: plain asyncio, on purpose
        async for data in call:
            parsed = bridge_pb2.ClientEvent.FromString(data)
            if parsed.HasField("publish_batch"):
                for publish in parsed.publish_batch.publishes:
                    touched += len(publish.event.payload)
                    received += 1
            else:
                touched += len(parsed.publish.event.payload)
                received += 1
        await writer
        elapsed = time.perf_counter() - start
    assert received == messages * per_message
    assert touched
    return received / elapsed


async def unary_p50_us(port: int, calls: int) -> float:
    """Median round trip of a small unary call, in microseconds."""
    request = bridge_pb2.HeartbeatRequest(timestamp_ms=1).SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary(
            f"/{SERVICE}/Unary", request_serializer=_identity, response_deserializer=_identity
        )
        for _ in range(200):  # warm-up
            await unary(request)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await unary(request)
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e6


if __name__ == "__main__":
    asyncio.run(_serve())
