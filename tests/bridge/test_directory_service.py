"""``loom.v1.Directory`` and the ``AdminClient`` against a real server on 127.0.0.1:0."""

from __future__ import annotations

import json
import socket
import time

import anyio
import msgspec
import pytest

from loom.bridge import ToolStatus, Unauthenticated, WireError
from loom.bridge._admin import AdminClient
from loom.bridge._directory_service import agent_info_from_proto, agent_info_to_proto
from loom.bridge._errors import ConnectFailed
from loom.bridge._generated import directory_pb2
from loom.runtime import AgentInfo, AgentStatus, Event, InvalidArgument
from loom.runtime.tools import FunctionTool, ToolRegistry

from ._server_harness import OldAgent, auth, channel, descriptor, serving

pytestmark = pytest.mark.anyio


def _free_port() -> int:
    """A port nothing listens on (bound and released; good enough for a refusal)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_lists_remote_agents_with_their_facts_and_filters() -> None:
    async with serving() as served, channel(served.target) as ch:
        worker = await OldAgent(ch, "worker").connect(
            topics=["jobs.*"], tools=[descriptor("jobs.run")]
        )
        other = await OldAgent(ch, "other").connect(topics=["news.>"])
        async with AdminClient(served.target) as admin:
            agents = {a.id: a for a in await admin.list_agents()}
            assert set(agents) == {"worker", "other"}
            w = agents["worker"]
            assert w.status is AgentStatus.RUNNING
            assert w.remote
            assert set(w.patterns) == {"jobs.*", "agent.worker.replies"}
            assert w.capabilities == ("jobs.run",)
            assert abs(w.last_heartbeat_ms - time.time() * 1000) < 60_000
            assert w.restarts == 0

            by_cap = await admin.list_agents(capability="jobs.run")
            assert [a.id for a in by_cap] == ["worker"]
            by_topic = await admin.list_agents(topic="news.eu.fr")
            assert [a.id for a in by_topic] == ["other"]
            assert await admin.list_agents(topic="jobs.a", capability="nope") == []

            with pytest.raises(InvalidArgument, match="topic"):
                await admin.list_agents(topic="bad..topic")

            await worker.close()
            with anyio.fail_after(5):
                while True:
                    info = {a.id: a for a in await admin.list_agents()}["worker"]
                    if info.status is AgentStatus.DISCONNECTED:
                        break
                    await anyio.sleep(0.01)  # polling a state change, not readiness of a server
        await other.close()


async def test_publish_subscribe_stats_and_tools() -> None:
    registry = ToolRegistry()

    async def add(a: int, b: int) -> int:
        return a + b

    registry.register(
        FunctionTool(
            add,
            name="math.add",
            description="adds",
            parameters_schema={
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        )
    )
    async with serving(tools=registry) as served, AdminClient(served.target) as admin:
        async with admin.subscribe("orders.*", event_types=["created"]) as deliveries:
            outcome = await admin.publish(
                "orders.eu",
                [Event(type="created", payload=b"1"), Event(type="ignored"), Event(type="created")],
            )
            assert outcome.accepted == 3
            assert outcome.rejections == ()
            got = []
            with anyio.fail_after(5):
                async for delivery in deliveries:
                    got.append(delivery)
                    if len(got) == 2:
                        break
            assert [d.topic for d in got] == ["orders.eu", "orders.eu"]
            assert [d.event.payload for d in got] == [b"1", b""]

        bad = await admin.publish("bad..topic", [Event(type="x")])
        assert bad.accepted == 0
        assert [(r.position, r.code) for r in bad.rejections] == [(1, "INVALID_ARGUMENT")]

        stats = await admin.statistics()
        assert {t.topic for t in stats.topics} >= {"orders.eu"}
        assert stats.published >= 3

        ok = await admin.call_tool("math.add", json.dumps({"a": 2, "b": 3}), timeout=5)
        assert ok.status is ToolStatus.OK
        assert json.loads(ok.output) == 5
        missing = await admin.call_tool("nope", "{}")
        assert missing.status is ToolStatus.NOT_FOUND
        invalid = await admin.call_tool("math.add", json.dumps({"a": "x"}))
        assert invalid.status is ToolStatus.INVALID_ARGUMENTS
        assert [t.name for t in await admin.list_tools(prefix="math.")] == ["math.add"]

        with pytest.raises(InvalidArgument):
            async with admin.subscribe("bad..pattern"):
                pass


async def test_unreachable_server_fails_fast_with_connect_failed() -> None:
    start = time.monotonic()
    async with AdminClient(f"127.0.0.1:{_free_port()}", timeout=5) as admin:
        with pytest.raises(ConnectFailed, match="cannot connect"):
            await admin.list_agents()
        with pytest.raises(ConnectFailed):
            async with admin.subscribe("a.b"):
                pass
    assert time.monotonic() - start < 4


async def test_token_is_sent_and_a_missing_one_refused() -> None:
    async with serving(token="s3cret") as served:
        async with AdminClient(served.target, token="s3cret") as admin:
            assert await admin.list_agents() == []
        async with AdminClient(served.target) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.list_agents()
        async with channel(served.target) as ch:
            await OldAgent(ch, "a", metadata=auth("s3cret")).connect()


def test_agent_info_round_trip_and_unknown_status() -> None:
    info = AgentInfo(
        id="a",
        status=AgentStatus.STALE,
        patterns=("x.*", "agent.a.replies"),
        capabilities=("t.one",),
        remote=True,
        last_heartbeat_ms=123,
        mailbox_depth=4,
        in_flight=1,
        restarts=2,
        metadata={"k": "v"},
    )
    back = agent_info_from_proto(agent_info_to_proto(info))
    assert back.id == info.id
    assert back.status is info.status
    assert (back.patterns, back.capabilities, back.remote) == (
        info.patterns,
        info.capabilities,
        True,
    )
    assert (back.last_heartbeat_ms, back.mailbox_depth, back.in_flight, back.restarts) == (
        123,
        4,
        1,
        2,
    )
    assert dict(back.metadata) == {"k": "v"}
    for status in AgentStatus:
        assert agent_info_from_proto(agent_info_to_proto(info_with(info, status))).status is status
    with pytest.raises(WireError, match="AgentStatus"):
        agent_info_from_proto(directory_pb2.AgentInfo(id="a"))


def info_with(info: AgentInfo, status: AgentStatus) -> AgentInfo:
    return msgspec.structs.replace(info, status=status)


def test_admin_client_checks_its_arguments() -> None:
    with pytest.raises(InvalidArgument):
        AdminClient("")
    with pytest.raises(InvalidArgument):
        AdminClient("127.0.0.1:1", timeout=0)
