"""``loom.v1.MemoryService`` as an agent of the original Loom calls it: a raw gRPC channel and
the generated ``MemoryServiceStub``, nothing of Loom's client. Every RPC, the duplicate
window's edge, ``duplicate_prevented`` counted, typed refusals of bad input, isolation between
authenticated callers, and a ``loom serve`` subprocess killed and started again in between
(the original lost everything on restart)."""

from __future__ import annotations

import gc
import math
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import grpc
import grpc.aio
import pytest
from anyio.abc import ByteReceiveStream, Process, TaskGroup
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)

from loom.bridge import BridgeServer, MemoryLimits, PlanMemory, Tenant, TLSConfig
from loom.bridge._generated import event_pb2, memory_pb2, memory_pb2_grpc
from loom.bridge._memory_store import IN_MEMORY
from loom.runtime import AgentRuntime, EventBus
from loom.runtime.memory import SchemaVersionError

from ._server_harness import OldAgent, auth, channel
from .test_server_security import PKI

pytestmark = pytest.mark.anyio

Metadata = tuple[tuple[str, str], ...]
TOKEN = "shared-token-3f9a1c77e2b0d54a"
ADMIN = "admin-token-8c1e0b5f93a7d246"
TEAM_A = "team-a-token-5d2f8e4b1c9a0763"


@dataclass
class Memory:
    server: BridgeServer
    stub: memory_pb2_grpc.MemoryServiceAsyncStub
    ch: grpc.aio.Channel


@asynccontextmanager
async def memory_server(
    data: Path,
    *,
    limits: MemoryLimits | None = None,
    token: str | None = None,
    admin_token: str | None = None,
    tenants: Sequence[Tenant] = (),
    tls: TLSConfig | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> AsyncIterator[Memory]:
    try:
        async with (
            EventBus(drain_grace=0.5) as bus,
            AgentRuntime(bus, stop_timeout_s=1.0) as runtime,
            PlanMemory.in_data_dir(data, limits) as store,
            BridgeServer(
                runtime,
                grace_s=1.0,
                memory=store,
                token=token,
                admin_token=admin_token,
                tenants=tenants,
                tls=tls,
            ) as server,
            channel(f"localhost:{server.port}", credentials=credentials) as ch,
        ):
            yield Memory(server, memory_pb2_grpc.MemoryServiceStub(ch), ch)
    finally:
        gc.collect()  # see _server_harness.serving


def plan(
    symbol: str = "BTCUSDT",
    action: str = "buy",
    ts: int = 0,
    plan_hash: str = "",
    confidence: float = 0.75,
    **extra: Any,
) -> memory_pb2.PlanRecord:
    return memory_pb2.PlanRecord(
        timestamp_ms=ts,
        symbol=symbol,
        action=action,
        confidence=confidence,
        reasoning="momentum",
        plan_hash=plan_hash or f"{symbol}-{action}-{ts}",
        method="llm",
        **extra,
    )


async def refused(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


async def test_plans_round_trip_newest_first_by_symbol(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with memory_server(tmp_path) as m:
            for i, symbol in enumerate(["BTCUSDT", "ETHUSDT", "BTCUSDT", "BTCUSDT"]):
                sent = plan(symbol, ts=1_000 + i, metadata={"i": str(i)})
                answer = await m.stub.SavePlan(
                    memory_pb2.SavePlanRequest(session_id="a", plan=sent)
                )
                assert (answer.success, answer.plan_hash) == (True, sent.plan_hash)
            got = await m.stub.GetRecentPlans(
                memory_pb2.GetRecentPlansRequest(session_id="a", symbol="BTCUSDT", limit=10)
            )
            assert got.success
            assert [p.timestamp_ms for p in got.plans] == [1_003, 1_002, 1_000]
            first = got.plans[-1]
            assert (first.reasoning, first.method, dict(first.metadata)) == (
                "momentum",
                "llm",
                {"i": "0"},
            )
            assert math.isclose(first.confidence, 0.75)
            # limit clamped to 1..100 as the original did: 0 is one plan.
            one = await m.stub.GetRecentPlans(
                memory_pb2.GetRecentPlansRequest(session_id="a", symbol="BTCUSDT")
            )
            assert [p.timestamp_ms for p in one.plans] == [1_003]
            # Another session sees none of them.
            other = await m.stub.GetRecentPlans(
                memory_pb2.GetRecentPlansRequest(session_id="b", symbol="BTCUSDT", limit=10)
            )
            assert list(other.plans) == []


async def test_duplicate_window_edge_and_duplicates_prevented(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with memory_server(tmp_path) as m:
            t = 1_700_000_000_000
            await m.stub.SavePlan(memory_pb2.SavePlanRequest(session_id="a", plan=plan(ts=t)))

            async def check(
                at: int, window: int, action: str = "buy"
            ) -> memory_pb2.CheckDuplicateResponse:
                request = memory_pb2.CheckDuplicateRequest(
                    session_id="a", plan=plan(ts=at, action=action), time_window_sec=window
                )
                return await m.stub.CheckDuplicate(request)

            # A window under 60 s is 60 s; the edge itself is inside.
            inside = await check(t + 60_000, 10)
            assert inside.is_duplicate
            assert inside.time_since_duplicate_ms == 60_000
            assert inside.duplicate_plan.plan_hash == f"BTCUSDT-buy-{t}"
            assert not (await check(t + 60_001, 10)).is_duplicate
            # A wider window is honoured, to the millisecond.
            assert (await check(t + 120_000, 120)).is_duplicate
            assert not (await check(t + 120_001, 120)).is_duplicate
            # Same symbol, another action: not a duplicate.
            assert not (await check(t + 1, 60, action="sell")).is_duplicate
            # No timestamp: measured from now, so a plan saved now is a duplicate of it.
            await m.stub.SavePlan(
                memory_pb2.SavePlanRequest(session_id="a", plan=plan(ts=0, plan_hash="now"))
            )
            fresh = await m.stub.CheckDuplicate(
                memory_pb2.CheckDuplicateRequest(session_id="a", plan=plan(ts=0))
            )
            assert fresh.is_duplicate
            assert fresh.duplicate_plan.plan_hash == "now"
            assert 0 <= fresh.time_since_duplicate_ms < 10_000

            stats = await m.stub.GetExecutionStats(
                memory_pb2.GetExecutionStatsRequest(session_id="a", symbol="BTCUSDT")
            )
            assert stats.duplicate_prevented == 3  # the three duplicates found above
            other = await m.stub.GetExecutionStats(
                memory_pb2.GetExecutionStatsRequest(session_id="a", symbol="ETHUSDT")
            )
            assert other.duplicate_prevented == 0


async def test_executions_and_stats(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with memory_server(tmp_path) as m:
            await m.stub.SavePlan(
                memory_pb2.SavePlanRequest(session_id="a", plan=plan(ts=5, plan_hash="p1"))
            )
            # No execution given: a record with status "executed", filled from the plan.
            ok = await m.stub.MarkExecuted(
                memory_pb2.MarkExecutedRequest(session_id="a", plan_hash="p1")
            )
            assert ok.success
            second = memory_pb2.ExecutionRecord(
                status="filled", executed=True, order_id="o-2", order_size_usdt=50
            )
            await m.stub.MarkExecuted(
                memory_pb2.MarkExecutedRequest(session_id="a", plan_hash="p1", execution=second)
            )
            failed = memory_pb2.ExecutionRecord(
                plan_hash="p2", symbol="BTCUSDT", status="rejected", error_message="no funds"
            )
            await m.stub.MarkExecuted(
                memory_pb2.MarkExecutedRequest(session_id="a", plan_hash="p2", execution=failed)
            )
            other = memory_pb2.ExecutionRecord(symbol="ETHUSDT", status="filled", executed=True)
            await m.stub.MarkExecuted(
                memory_pb2.MarkExecutedRequest(session_id="a", plan_hash="p3", execution=other)
            )

            first = await m.stub.CheckExecuted(
                memory_pb2.CheckExecutedRequest(session_id="a", plan_hash="p1")
            )
            assert first.is_executed
            e = first.execution
            assert (e.status, e.executed, e.plan_hash, e.symbol, e.action) == (
                "executed", True, "p1", "BTCUSDT", "buy",
            )  # fmt: skip
            assert e.timestamp_ms > 0
            none = await m.stub.CheckExecuted(
                memory_pb2.CheckExecutedRequest(session_id="a", plan_hash="p9")
            )
            assert not none.is_executed
            assert not none.HasField("execution")

            stats = await m.stub.GetExecutionStats(
                memory_pb2.GetExecutionStatsRequest(session_id="a", symbol="BTCUSDT")
            )
            assert (
                stats.total_executions,
                stats.successful_executions,
                stats.failed_executions,
            ) == (3, 2, 1)
            assert math.isclose(stats.win_rate, 2 / 3, rel_tol=1e-6)
            assert [r.plan_hash for r in stats.recent_executions] == ["p2", "p1", "p1"]
            # The execution without a symbol counts under its plan's.
            assert stats.recent_executions[1].order_id == "o-2"
            assert stats.recent_executions[1].symbol == "BTCUSDT"
            every = await m.stub.GetExecutionStats(
                memory_pb2.GetExecutionStatsRequest(session_id="a")
            )
            assert every.total_executions == 4
            empty = await m.stub.GetExecutionStats(
                memory_pb2.GetExecutionStatsRequest(session_id="z")
            )
            assert (empty.total_executions, empty.win_rate) == (0, 0.0)


async def test_episode_append_retrieve_summarize(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with memory_server(tmp_path) as m:
            texts = [
                ("market.tick", b"bitcoin rallied above resistance", {"kind": "tick"}),
                ("news", b"the central bank held rates", {"kind": "news"}),
                ("market.tick", b"ether dipped while bitcoin held", {"kind": "tick"}),
                ("blob", b"\xff\xfe", {}),
            ]
            for type_, payload, md in texts:
                ev = event_pb2.Event(id=f"e-{type_}", type=type_, payload=payload)
                answer = await m.stub.AppendEvent(
                    memory_pb2.MemoryWriteRequest(session_id="a", event=ev, metadata=md)
                )
                assert answer.success
            found = await m.stub.Retrieve(
                memory_pb2.MemoryRetrieveRequest(session_id="a", query="bitcoin", k=5)
            )
            assert found.success
            assert set(found.results) == {
                "market.tick: bitcoin rallied above resistance",
                "market.tick: ether dipped while bitcoin held",
            }
            news = await m.stub.Retrieve(
                memory_pb2.MemoryRetrieveRequest(
                    session_id="a", query="bank rates", filters={"kind": "news"}
                )
            )
            assert list(news.results) == ["news: the central bank held rates"]
            typed = await m.stub.Retrieve(
                memory_pb2.MemoryRetrieveRequest(
                    session_id="a", query="bitcoin", filters={"event_type": "news"}
                )
            )
            assert list(typed.results) == []
            # No words in the query: the newest events, newest first.
            newest = await m.stub.Retrieve(memory_pb2.MemoryRetrieveRequest(session_id="a", k=2))
            assert list(newest.results) == [
                "blob: (2 bytes)",
                "market.tick: ether dipped while bitcoin held",
            ]
            assert (
                list(
                    (
                        await m.stub.Retrieve(
                            memory_pb2.MemoryRetrieveRequest(session_id="b", query="bitcoin")
                        )
                    ).results
                )
                == []
            )

            summary = await m.stub.SummarizeEpisode(
                memory_pb2.MemorySummarizeRequest(session_id="a", max_events=2)
            )
            assert summary.success
            assert summary.event_count == 2
            assert (
                summary.summary == "market.tick: ether dipped while bitcoin held\nblob: (2 bytes)"
            )
            whole = await m.stub.SummarizeEpisode(memory_pb2.MemorySummarizeRequest(session_id="a"))
            assert whole.event_count == 4


BAD: list[tuple[str, str, Any, str]] = [
    ("SavePlan", "no plan", memory_pb2.SavePlanRequest(session_id="a"), "SavePlanRequest.plan"),
    (
        "SavePlan",
        "no hash",
        memory_pb2.SavePlanRequest(session_id="a", plan=memory_pb2.PlanRecord(symbol="X")),
        "plan_hash",
    ),
    (
        "SavePlan",
        "nan",
        memory_pb2.SavePlanRequest(session_id="a", plan=plan(confidence=math.nan)),
        "confidence",
    ),
    (
        "SavePlan",
        "no session",
        memory_pb2.SavePlanRequest(plan=plan()),
        "SavePlanRequest.session_id",
    ),
    (
        "SavePlan",
        "long session",
        memory_pb2.SavePlanRequest(session_id="s" * 257, plan=plan()),
        "session_id",
    ),
    (
        "GetRecentPlans",
        "negative limit",
        memory_pb2.GetRecentPlansRequest(session_id="a", limit=-1),
        "limit",
    ),
    (
        "CheckDuplicate",
        "no plan",
        memory_pb2.CheckDuplicateRequest(session_id="a"),
        "CheckDuplicateRequest.plan",
    ),
    (
        "CheckDuplicate",
        "negative window",
        memory_pb2.CheckDuplicateRequest(session_id="a", plan=plan(), time_window_sec=-5),
        "time_window_sec",
    ),
    (
        "CheckDuplicate",
        "negative time",
        memory_pb2.CheckDuplicateRequest(session_id="a", plan=plan(ts=-1)),
        "timestamp_ms",
    ),
    (
        "MarkExecuted",
        "no hash",
        memory_pb2.MarkExecutedRequest(session_id="a"),
        "MarkExecutedRequest.plan_hash",
    ),
    (
        "MarkExecuted",
        "other hash",
        memory_pb2.MarkExecutedRequest(
            session_id="a", plan_hash="p", execution=memory_pb2.ExecutionRecord(plan_hash="q")
        ),
        "execution.plan_hash",
    ),
    (
        "CheckExecuted",
        "no hash",
        memory_pb2.CheckExecutedRequest(session_id="a"),
        "CheckExecutedRequest.plan_hash",
    ),
    ("GetExecutionStats", "no session", memory_pb2.GetExecutionStatsRequest(), "session_id"),
    (
        "AppendEvent",
        "no event",
        memory_pb2.MemoryWriteRequest(session_id="a"),
        "MemoryWriteRequest.event",
    ),
    (
        "Retrieve",
        "negative k",
        memory_pb2.MemoryRetrieveRequest(session_id="a", k=-1),
        "MemoryRetrieveRequest.k",
    ),
    (
        "SummarizeEpisode",
        "negative max",
        memory_pb2.MemorySummarizeRequest(session_id="a", max_events=-3),
        "max_events",
    ),
]


async def test_bad_input_is_invalid_argument_naming_the_field(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with memory_server(tmp_path) as m:
            for rpc, why, request, field in BAD:
                details = await refused(
                    getattr(m.stub, rpc)(request), grpc.StatusCode.INVALID_ARGUMENT
                )
                assert field in details, (rpc, why, details)
            # Nothing was stored by the refused calls, and the server goes on serving.
            stats = await m.stub.GetExecutionStats(
                memory_pb2.GetExecutionStatsRequest(session_id="a")
            )
            assert stats.total_executions == 0
            plans = await m.stub.GetRecentPlans(
                memory_pb2.GetRecentPlansRequest(session_id="a", limit=5)
            )
            assert list(plans.plans) == []


async def test_limits_keep_the_newest_and_bound_sessions(tmp_path: Path) -> None:
    limits = MemoryLimits(plans_per_session=3, events_per_session=2, max_sessions=2)
    with anyio.fail_after(20):
        async with memory_server(tmp_path, limits=limits) as m:
            for i in range(5):
                await m.stub.SavePlan(
                    memory_pb2.SavePlanRequest(session_id="a", plan=plan(ts=i + 1))
                )
                ev = event_pb2.Event(type="t", payload=f"event {i}".encode())
                await m.stub.AppendEvent(memory_pb2.MemoryWriteRequest(session_id="a", event=ev))
            got = await m.stub.GetRecentPlans(
                memory_pb2.GetRecentPlansRequest(session_id="a", symbol="BTCUSDT", limit=100)
            )
            assert [p.timestamp_ms for p in got.plans] == [5, 4, 3]
            summary = await m.stub.SummarizeEpisode(
                memory_pb2.MemorySummarizeRequest(session_id="a")
            )
            assert summary.summary == "t: event 3\nt: event 4"
            await m.stub.SavePlan(memory_pb2.SavePlanRequest(session_id="b", plan=plan()))
            details = await refused(
                m.stub.SavePlan(memory_pb2.SavePlanRequest(session_id="c", plan=plan())),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
            assert "max_sessions" in details


async def test_a_held_agent_s_memory_is_its_own(tmp_path: Path) -> None:
    """Two agents whose streams opened with their registration secrets: each reaches its own
    session only with its secret; the other's is PERMISSION_DENIED, read or write."""
    with anyio.fail_after(20):
        async with memory_server(tmp_path) as m:
            secrets: dict[str, Metadata] = {}
            agents = []
            for name in ("alice", "bob"):
                agent = OldAgent(m.ch, name)
                secret = (await agent.register()).registration_secret
                secrets[name] = (("loom-agent-secret", secret),)
                agent.metadata = secrets[name]
                await agent.open()
                agents.append(agent)
            for name in ("alice", "bob"):
                await m.stub.SavePlan(
                    memory_pb2.SavePlanRequest(
                        session_id=name, plan=plan(plan_hash=f"{name}-plan")
                    ),
                    metadata=secrets[name],
                )
            mine = await m.stub.GetRecentPlans(
                memory_pb2.GetRecentPlansRequest(session_id="alice", symbol="BTCUSDT", limit=9),
                metadata=secrets["alice"],
            )
            assert [p.plan_hash for p in mine.plans] == ["alice-plan"]
            # Alice's secret on bob's session, and no secret at all: refused, nothing read.
            for md in (secrets["alice"], ()):
                request = memory_pb2.GetRecentPlansRequest(session_id="bob", symbol="BTCUSDT")
                await refused(
                    m.stub.GetRecentPlans(request, metadata=md), grpc.StatusCode.PERMISSION_DENIED
                )
                write = memory_pb2.SavePlanRequest(session_id="bob", plan=plan(plan_hash="forged"))
                await refused(
                    m.stub.SavePlan(write, metadata=md), grpc.StatusCode.PERMISSION_DENIED
                )
            theirs = await m.stub.GetRecentPlans(
                memory_pb2.GetRecentPlansRequest(session_id="bob", symbol="BTCUSDT", limit=9),
                metadata=secrets["bob"],
            )
            assert [p.plan_hash for p in theirs.plans] == ["bob-plan"]
            # An old client (no secret, so it holds no id) keeps the original's behaviour.
            old = await m.stub.SavePlan(memory_pb2.SavePlanRequest(session_id="carol", plan=plan()))
            assert old.success
            for agent in agents:
                await agent.close()


async def test_tenants_stay_inside_their_namespace(tmp_path: Path) -> None:
    tenants = [Tenant(name="a", token=TEAM_A, namespace="team-a")]
    with anyio.fail_after(20):
        async with memory_server(tmp_path, token=TOKEN, admin_token=ADMIN, tenants=tenants) as m:
            ok = await m.stub.SavePlan(
                memory_pb2.SavePlanRequest(session_id="team-a:trader", plan=plan()),
                metadata=auth(TEAM_A),
            )
            assert ok.success
            for session in ("trader", "team-b:trader"):
                request = memory_pb2.GetRecentPlansRequest(session_id=session, symbol="BTCUSDT")
                await refused(
                    m.stub.GetRecentPlans(request, metadata=auth(TEAM_A)),
                    grpc.StatusCode.PERMISSION_DENIED,
                )
            # The shared token may not reach into the namespace; the operator may.
            inside = memory_pb2.GetRecentPlansRequest(
                session_id="team-a:trader", symbol="BTCUSDT", limit=5
            )
            await refused(
                m.stub.GetRecentPlans(inside, metadata=auth(TOKEN)),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            seen = await m.stub.GetRecentPlans(inside, metadata=auth(ADMIN))
            assert len(seen.plans) == 1
            await refused(m.stub.GetRecentPlans(inside), grpc.StatusCode.UNAUTHENTICATED)


async def test_a_certificate_s_agents_are_its_sessions(tmp_path: Path) -> None:
    """Under bind_agent_ids the client certificate names the agents whose memory it may use;
    an empty session_id is its own agent."""
    pki = PKI(tmp_path)
    cert, key = pki.issue("agent-a")
    as_a = grpc.ssl_channel_credentials(
        root_certificates=pki.pem["ca"], certificate_chain=cert, private_key=key
    )
    tls = pki.server_tls(mutual=True, bind=True)
    with anyio.fail_after(20):
        async with memory_server(tmp_path / "data", tls=tls, credentials=as_a) as m:
            saved = await m.stub.SavePlan(memory_pb2.SavePlanRequest(plan=plan(plan_hash="mine")))
            assert saved.success
            named = memory_pb2.GetRecentPlansRequest(session_id="agent-a", symbol="BTCUSDT")
            assert [p.plan_hash for p in (await m.stub.GetRecentPlans(named)).plans] == ["mine"]
            other = memory_pb2.SavePlanRequest(session_id="agent-b", plan=plan())
            details = await refused(m.stub.SavePlan(other), grpc.StatusCode.PERMISSION_DENIED)
            assert "agent-b" in details


async def test_health_and_reflection_list_it(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with memory_server(tmp_path) as m:
            health = health_pb2_grpc.HealthStub(m.ch)
            check = health_pb2.HealthCheckRequest(service="loom.v1.MemoryService")
            assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(m.ch)
            call = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = set()
            async for answer in call:
                names |= {s.name for s in answer.list_services_response.service}
            assert "loom.v1.MemoryService" in names


async def test_a_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    async with PlanMemory.in_data_dir(tmp_path):
        pass
    with sqlite3.connect(tmp_path / "memory.sqlite3") as conn:
        conn.execute("UPDATE memory_service_version SET version = 99")
    conn.close()
    with pytest.raises(SchemaVersionError):
        async with PlanMemory.in_data_dir(tmp_path):
            pass


async def test_without_a_store_the_server_keeps_one_in_memory() -> None:
    """A BridgeServer given no store serves the original's answers from memory, gone with it."""
    with anyio.fail_after(20):
        for round in range(2):
            try:
                async with (
                    EventBus(drain_grace=0.5) as bus,
                    AgentRuntime(bus, stop_timeout_s=1.0) as runtime,
                    BridgeServer(runtime, grace_s=1.0) as server,
                    channel(f"127.0.0.1:{server.port}") as ch,
                ):
                    stub = memory_pb2_grpc.MemoryServiceStub(ch)
                    request = memory_pb2.GetRecentPlansRequest(session_id="a", symbol="BTCUSDT")
                    assert list((await stub.GetRecentPlans(request)).plans) == []  # none kept
                    saved = memory_pb2.SavePlanRequest(session_id="a", plan=plan(ts=round + 1))
                    assert (await stub.SavePlan(saved)).success
                    assert len((await stub.GetRecentPlans(request)).plans) == 1
            finally:
                gc.collect()
            assert not await anyio.Path(IN_MEMORY).exists()  # no file of that name either


async def _serve(data: Path, tg: TaskGroup) -> tuple[Process, int]:
    """``loom serve`` on a free port; returns once it logs where it listens."""
    argv = [
        *(sys.executable, "-m", "loom.cli", "serve", "--port", "0", "--nats", "off"),
        *("--data-dir", str(data), "--drain-grace", "0.5", "--log-level", "info"),
    ]
    proc = await anyio.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    text = ""
    async for chunk in proc.stderr:
        text += chunk.decode(errors="replace")
        found = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
        if found is not None:
            tg.start_soon(_drain, proc.stderr)  # so a full pipe never blocks the server
            return proc, int(found.group(1))
    raise AssertionError(f"loom serve ended before listening: {text[-500:]}")


async def _drain(stream: ByteReceiveStream) -> None:
    async for _ in stream:
        pass


async def test_memory_survives_a_killed_loom_serve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    t = int(time.time() * 1000)
    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            proc, port = await _serve(data, tg)
            try:
                async with channel(f"127.0.0.1:{port}") as ch:
                    stub = memory_pb2_grpc.MemoryServiceStub(ch)
                    await stub.SavePlan(
                        memory_pb2.SavePlanRequest(
                            session_id="a", plan=plan(ts=t, plan_hash="kept")
                        )
                    )
                    await stub.MarkExecuted(
                        memory_pb2.MarkExecutedRequest(session_id="a", plan_hash="kept")
                    )
                    ev = event_pb2.Event(type="note", payload=b"remember the halving")
                    await stub.AppendEvent(memory_pb2.MemoryWriteRequest(session_id="a", event=ev))
                    dup = await stub.CheckDuplicate(
                        memory_pb2.CheckDuplicateRequest(session_id="a", plan=plan(ts=t + 1))
                    )
                    assert dup.is_duplicate
            finally:
                proc.kill()  # SIGKILL: no drain, no close of the store
                await proc.wait()
            assert (data / "memory.sqlite3").exists()

            proc, port = await _serve(data, tg)
            try:
                async with channel(f"127.0.0.1:{port}") as ch:
                    stub = memory_pb2_grpc.MemoryServiceStub(ch)
                    plans = await stub.GetRecentPlans(
                        memory_pb2.GetRecentPlansRequest(session_id="a", symbol="BTCUSDT", limit=5)
                    )
                    assert [p.plan_hash for p in plans.plans] == ["kept"]
                    done = await stub.CheckExecuted(
                        memory_pb2.CheckExecutedRequest(session_id="a", plan_hash="kept")
                    )
                    assert done.is_executed
                    assert done.execution.status == "executed"
                    stats = await stub.GetExecutionStats(
                        memory_pb2.GetExecutionStatsRequest(session_id="a", symbol="BTCUSDT")
                    )
                    assert (stats.total_executions, stats.duplicate_prevented) == (1, 1)
                    found = await stub.Retrieve(
                        memory_pb2.MemoryRetrieveRequest(session_id="a", query="halving")
                    )
                    assert list(found.results) == ["note: remember the halving"]
                    # Still a duplicate after the restart: the window reads the stored plan.
                    again = await stub.CheckDuplicate(
                        memory_pb2.CheckDuplicateRequest(session_id="a", plan=plan(ts=t + 2))
                    )
                    assert again.is_duplicate
                    assert again.duplicate_plan.plan_hash == "kept"
            finally:
                proc.terminate()
                await proc.wait()
            tg.cancel_scope.cancel()
