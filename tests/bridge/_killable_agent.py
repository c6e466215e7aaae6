"""A raw-stub agent run as a subprocess by the server tests, to be killed mid tool call.

Usage: python _killable_agent.py HOST:PORT AGENT_ID. Prints "ready" once its stream runs and
"call <id>" when a tool call arrives, then never answers.
"""

from __future__ import annotations

import asyncio
import sys

import grpc.aio

from loom.bridge._generated import bridge_pb2, bridge_pb2_grpc, tools_pb2


async def main(target: str, agent_id: str) -> None:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = bridge_pb2_grpc.BridgeStub(ch)
        await stub.RegisterAgent(
            bridge_pb2.AgentRegisterRequest(
                agent_id=agent_id, tools=[tools_pb2.ToolDescriptor(name="victim.work")]
            )
        )
        call = stub.EventStream()
        await call.write(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=agent_id)))
        await call.write(bridge_pb2.ClientEvent(ping=bridge_pb2.HeartbeatRequest(timestamp_ms=1)))
        while True:
            msg = await call.read()
            if not isinstance(msg, bridge_pb2.ServerEvent):
                return
            kind = msg.WhichOneof("msg")
            if kind == "pong":
                print("ready", flush=True)
            elif kind == "tool_call":
                print(f"call {msg.tool_call.id}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
