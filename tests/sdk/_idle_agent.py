"""A raw-stub agent that stops reading its stream, run as a subprocess by the byte-bound tests.

Usage: python _idle_agent.py HOST:PORT AGENT_ID PATTERN. Registers AGENT_ID subscribed to
PATTERN, opens its stream, prints "ready" once the server answered a ping, and then never
reads again (a client that is stuck, or slow beyond measure): what the server sends it piles
up in the server.
"""

from __future__ import annotations

import asyncio
import sys

import grpc.aio

from loom.bridge._generated import bridge_pb2, bridge_pb2_grpc


async def main(target: str, agent_id: str, pattern: str) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = bridge_pb2_grpc.BridgeStub(ch)
        await stub.RegisterAgent(
            bridge_pb2.AgentRegisterRequest(agent_id=agent_id, subscribed_topics=[pattern])
        )
        call = stub.EventStream()
        await call.write(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=agent_id)))
        await call.write(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=1)))
        while True:
            msg = await call.read()
            if not isinstance(msg, bridge_pb2.ServerEvent):
                return
            if msg.WhichOneof("msg") == "pong":
                print("ready", flush=True)
                break
        await asyncio.Event().wait()  # idle for good; the test kills us


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
