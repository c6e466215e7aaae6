"""``--log-level debug`` as an operator reads it: a real ``loom serve`` and a ``loom run``
agent, driven by real clients through each decision Loom makes, and the line each decision
leaves (issue 11, section 5: "debug shows Loom's own decisions: registrations, refusals, tool
calls with outcome and duration, rate-limited").

Each decision is checked by the line it must leave; before, the refused subscriptions and
publishes (on a stream and on ``EventBus``), the warnings a flood of malformed requests had
rate-limited, the limit behind a refused tool call, an operator's release and ``loom run``'s
start of an agent process left none.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import grpc
import grpc.aio
import pytest

from loom.bridge import (
    AdminClient,
    AgentRegistration,
    BridgeClient,
    ClientOptions,
    PublishRejected,
    SubscribeRefused,
)
from loom.bridge._generated import bridge_pb2
from loom.bridge._handlers import WARN_BURST
from loom.runtime import Event

from ._cli_support import clean_env, loom, loom_serve, running
from .test_agent_process import AGENT

pytestmark = pytest.mark.anyio

ADMIN = "an-admin-token-for-the-debug-test"
_ID = r"\(\S+\)"
_MS = r"\d+\.\d ms"


async def test_debug_shows_each_decision(tmp_path: Path) -> None:
    # A slow call long enough for a second `loom call` process to start while it runs.
    slow_agent = AGENT.replace("await asyncio.sleep(2)", "await asyncio.sleep(6)")
    assert slow_agent != AGENT
    (tmp_path / "upper_agent.py").write_text(slow_agent)
    limits = ("--max-topics-per-agent", "3", "--max-pending-tool-calls", "1")
    serve_flags = ("--log-level", "debug", "--admin-token", ADMIN, *limits)
    async with (
        loom_serve(tmp_path, *serve_flags) as (server, address),
        running(
            *("run", "upper_agent.py", "-a", address, "--log-level", "debug"),
            cwd=tmp_path,
            env=clean_env(),
        ) as run,
    ):
        with anyio.fail_after(90):
            # loom run: the process it starts, the agent's connection.
            await run.wait_for(r"\[upperer\] started upper_agent\.py \(pid \d+\)$")
            await run.wait_for(r"\[upperer\] .*connected to .* as upperer$")
            # A registration and its stream.
            await server.wait_for(
                r"INFO loom\.bridge: agent upperer registered \(2 topics, 1 tools\)$"
            )
            await server.wait_for(r"INFO loom\.bridge: agent upperer connected$")

            # Tool calls with their outcome and duration, where served and where run.
            ok = await loom("call", "text.upper", '{"text": "hi"}', "-a", address, cwd=tmp_path)
            assert ok.returncode == 0, ok.stderr
            await server.wait_for(
                f"DEBUG loom.bridge.calls: tool call text.upper {_ID}: OK in {_MS}$"
            )
            await run.wait_for(
                rf"\[upperer\] DEBUG loom\.bridge\.calls: tool call text.upper {_ID}: OK in {_MS}$"
            )
            missing = await loom("call", "no.such", "{}", "-a", address, cwd=tmp_path)
            assert missing.returncode != 0
            await server.wait_for(f"tool call no.such {_ID}: NOT_FOUND in {_MS}: no such tool$")

            # A limit hit: a second call while the agent's one pending-call slot is taken.
            slow_call = ("call", "text.upper", '{"text": "slow"}', "-a", address)
            async with running(*slow_call, cwd=tmp_path) as slow:
                await run.wait_for("slow call started")
                refused = await loom(
                    "call", "text.upper", '{"text": "x"}', "-a", address, cwd=tmp_path
                )
                assert refused.returncode != 0
                assert await slow.wait() == 0
            await server.wait_for(
                f"tool call text.upper {_ID}: ERROR RESOURCE_EXHAUSTED in {_MS}: agent upperer "
                r"has 1 calls pending \(limit max_pending_tool_calls = 1\)$"
            )
            await server.wait_for(f"tool call text.upper {_ID}: OK in 6\\d\\d\\d\\.\\d ms$")

            async with grpc.aio.insecure_channel(address) as ch:
                # A refused registration (a limit).
                register = ch.unary_unary(
                    "/loom.v1.Bridge/RegisterAgent",
                    request_serializer=bridge_pb2.AgentRegisterRequest.SerializeToString,
                    response_deserializer=bridge_pb2.AgentRegisterResponse.FromString,
                )
                greedy = bridge_pb2.AgentRegisterRequest(
                    agent_id="greedy", subscribed_topics=["a", "b", "c", "d"]
                )
                with pytest.raises(grpc.aio.AioRpcError):
                    await register(greedy)
                # Malformed requests: WARN_BURST warnings, the rest rate-limited (at debug).
                garbage: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(
                    "/loom.v1.ToolService/Call"
                )
                for _ in range(WARN_BURST + 2):
                    with pytest.raises(grpc.aio.AioRpcError):
                        await garbage(b"\xff\xff\xff")
            await server.wait_for(
                r"INFO loom\.bridge: agent greedy refused: agent greedy asks for 4 topics "
                r"\(limit max_topics_per_agent = 3\)$"
            )
            malformed = "/loom.v1.ToolService/Call from .*: malformed loom.v1.ToolCall: .*"
            await server.wait_for(
                f"WARNING loom.bridge: {malformed}INVALID_ARGUMENT$", count=WARN_BURST
            )
            await server.wait_for(
                f"DEBUG loom.bridge: {malformed}INVALID_ARGUMENT \\(rate-limited: over "
                f"{WARN_BURST} such warnings in 60 s\\)$",
                count=2,
            )

            # A refused subscription and a rejected publish on an agent's stream.
            spy = BridgeClient(
                address,
                AgentRegistration(agent_id="spy"),
                options=ClientOptions(connect_timeout=10),
            )
            async with spy:
                with pytest.raises(SubscribeRefused):
                    await spy.subscribe("agent.upperer.replies")
                with pytest.raises(PublishRejected):
                    await spy.publish(
                        "loom.lifecycle.spy", Event(type="forged"), wait_accepted=True
                    )
            await server.wait_for(
                r"DEBUG loom\.bridge: agent spy: subscription to 'agent\.upperer\.replies' "
                "refused: PERMISSION_DENIED: agent 'spy' cannot subscribe"
            )
            await server.wait_for(
                r"DEBUG loom\.bridge: agent spy: publish on 'loom\.lifecycle\.spy' rejected: "
                r"PERMISSION_DENIED: only the server publishes on loom\.lifecycle"
            )
            # The same on the EventBus service (loom tail, loom publish).
            tail = await loom("tail", "agent.upperer.replies", "-a", address, cwd=tmp_path)
            assert tail.returncode != 0
            forged = await loom("publish", "loom.lifecycle.x", "hi", "-a", address, cwd=tmp_path)
            assert forged.returncode != 0
            await server.wait_for(
                r"DEBUG loom\.bridge: EventBus\.Subscribe to 'agent\.upperer\.replies' from a "
                "client that is no agent refused: PERMISSION_DENIED: "
            )
            await server.wait_for(
                r"DEBUG loom\.bridge: EventBus\.Publish from a client that is no agent: publish 1 "
                r"on 'loom\.lifecycle\.x' rejected: PERMISSION_DENIED: "
            )

            # An operator's release; a crashed agent restarted by loom run.
            async with AdminClient(address, token=ADMIN) as admin:
                assert not await admin.release_agent("nobody")
            await server.wait_for(
                r"INFO loom\.bridge: agent nobody not registered: nothing released by the operator$"
            )
            pid = int((await run.wait_for(r"\[upperer\] started .* \(pid (\d+)\)$")).group(1))
            os.kill(pid, signal.SIGKILL)
            await run.wait_for(r"\[upperer\] was killed by SIGKILL; restart 1 in \d+\.\d\d s$")
            await run.wait_for(r"\[upperer\] started upper_agent\.py \(pid \d+\)$", count=2)
            await server.wait_for(r"INFO loom\.bridge: agent upperer disconnected")
            assert await run.stop() == 0
    # No traceback anywhere: every decision is one line.
    assert "Traceback" not in server.output + run.output
