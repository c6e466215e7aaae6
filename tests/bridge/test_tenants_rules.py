"""The naming rules of tenants (``bridge/_tenants.py``) and what a tenant token admits, on a
real gRPC server: which topics, agent ids and tools are inside a namespace, and the
configuration errors that keep two tenants from sharing a token or a shared token."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest

from loom.bridge import BridgeServer, InsecureBind, Tenant, WeakToken, validate_namespace
from loom.bridge._generated import bridge_pb2, bridge_pb2_grpc, bus_pb2_grpc
from loom.bridge._tenants import Tenants, agent_namespace, topic_inside, topic_namespace
from loom.runtime import AgentRuntime, EventBus, InvalidArgument

pytestmark = pytest.mark.anyio

A = Tenant(name="alpha", token="alpha-token-0123456789", namespace="team-a")
B = Tenant(name="beta", token="beta-token-0123456789x", namespace="team-b")


@pytest.mark.parametrize(
    ("topic", "inside"),
    [
        ("team-a", True),
        ("team-a.orders.created", True),
        ("team-a.>", True),
        ("team-a.*.created", True),
        ("agent.team-a:worker", True),
        ("agent.team-a:worker.replies.rpc", True),
        ("agent.team-a:worker.stream", True),
        ("agent.team-a:worker.>", True),
        ("loom.deadletter.team-a:worker", True),
        ("loom.dlq.team-a:worker", True),
        ("loom.lifecycle.team-a:worker", True),
        ("loom.barrier.team-a.phase-1", True),
        # Outside: another namespace, a prefix of the name, wildcards where the owner is
        # decided, system topics of no namespaced agent, inboxes.
        ("team-b.orders", False),
        ("team-a-x.orders", False),
        ("team", False),
        (">", False),
        ("*.orders", False),
        ("agent.>", False),
        ("agent.*.stream", False),
        ("agent.team-b:worker.replies", False),
        ("agent.team-a", False),
        ("agent.worker.replies", False),
        ("loom.dlq.>", False),
        ("loom.lifecycle.worker", False),
        ("loom.barrier.phase-1", False),
        ("loom.barrier.>", False),
        ("loom.barrier.team-b.phase-1", False),
        ("loom.cli.ask.x", False),
        ("_inbox.x", False),
    ],
)
def test_what_is_inside_a_namespace(topic: str, inside: bool) -> None:
    assert topic_inside("team-a", topic) is inside


def test_agent_and_topic_owners() -> None:
    assert agent_namespace("team-a:planner") == "team-a"
    assert agent_namespace("team-a:planner:2") == "team-a"
    assert agent_namespace("planner") is None
    assert agent_namespace(":planner") is None
    assert topic_namespace("orders.created") == "orders"  # any first segment can be one
    assert topic_namespace("agent.team-b:x.replies") == "team-b"


@pytest.mark.parametrize("name", ["", "agent", "loom", "_x", "-x", "a.b", "a:b", "a*", "x" * 65])
def test_invalid_namespaces(name: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_namespace(name)


def test_tenant_tables_refuse_shared_tokens_and_hide_them() -> None:
    with pytest.raises(InvalidArgument, match="same token"):
        Tenants([A, Tenant(name="again", token=A.token, namespace="team-c")])
    with pytest.raises(InvalidArgument, match="namespace"):
        Tenant(name="bad", token="t" * 20, namespace="a.b")
    assert A.token not in repr(A)
    table = Tenants([A, B])
    assert table.namespace_of(f"Bearer {B.token}".encode()) == "team-b"
    assert table.namespace_of(b"Bearer nope") is None
    assert table.claimed("team-a:x") == "team-a"
    assert table.claimed("team-c:x") is None  # not a configured namespace: free
    assert table.claimed("team-b.upper", tool=True) == "team-b"


async def test_a_tenant_token_is_no_shared_or_admin_token_and_must_be_strong() -> None:
    async with EventBus() as bus, AgentRuntime(bus) as runtime:
        with pytest.raises(InvalidArgument, match="shared or admin token"):
            BridgeServer(runtime, token=A.token, tenants=[A])
        with pytest.raises(InvalidArgument, match="shared or admin token"):
            BridgeServer(runtime, admin_token=A.token, tenants=[A])
        weak = Tenant(name="weak", token="short", namespace="team-w")
        with pytest.raises(WeakToken, match="tenant token 'weak'"):
            BridgeServer(runtime, host="0.0.0.0", tenants=[weak])
        # A tenant token guards a non-loopback address as a shared token does.
        BridgeServer(runtime, host="0.0.0.0", tenants=[A])
        with pytest.raises(InsecureBind):
            BridgeServer(runtime, host="0.0.0.0")


async def test_the_shared_token_keeps_working_but_cannot_take_a_tenant_s_id() -> None:
    shared = "shared-token-0123456789"
    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        BridgeServer(runtime, token=shared, tenants=[A]) as server,
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        meta = (("authorization", f"Bearer {shared}"),)
        bridge = bridge_pb2_grpc.BridgeStub(channel)
        # As before: any id outside the namespaces, and every topic.
        await bridge.RegisterAgent(
            bridge_pb2.AgentRegisterRequest(agent_id="worker", subscribed_topics=[">"]),
            metadata=meta,
            timeout=10,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bridge.RegisterAgent(
                bridge_pb2.AgentRegisterRequest(agent_id="team-a:worker"), metadata=meta, timeout=10
            )
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "in namespace 'team-a'" in (caught.value.details() or "")
        # A tenant's token on the same server: confined.
        bus_stub = bus_pb2_grpc.EventBusStub(channel)
        tenant = (("authorization", f"Bearer {A.token}"),)
        call = bus_stub.Subscribe(bridge_pb2.SubscribeRequest(pattern="worker.>"), metadata=tenant)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
