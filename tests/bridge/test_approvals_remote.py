"""The agent-side calls of ``loom.v1.Approvals`` (``RemoteApprovals``) against a real
``BridgeServer`` on ``127.0.0.1:0`` with a real SQLite store: a turn of an agent in another
process waits in the server's store, and a caller acts only for its own agents."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import grpc.aio
import pytest

from loom.bridge import BridgeServer, RemoteApprovals, Tenant
from loom.runtime import AgentRuntime, ApprovalNotFound, Approvals, EventBus, LoomError

from ._server_harness import auth, channel

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-0123456789abcdef"
TEAM_A = "team-a-token-0123456789abcdef"
TEAM_B = "team-b-token-0123456789abcdef"


@asynccontextmanager
async def serving(
    tmp_path: Path, *, store: bool = True
) -> AsyncIterator[tuple[Approvals | None, grpc.aio.Channel]]:
    try:
        async with (
            EventBus(drain_grace=0.5) as bus,
            AgentRuntime(bus, stop_timeout_s=1.0) as runtime,
            Approvals(Approvals.in_data_dir(tmp_path), bus=bus) as approvals,
        ):
            runtime.approvals = approvals if store else None
            async with (
                BridgeServer(
                    runtime,
                    grace_s=1.0,
                    admin_token=ADMIN,
                    tenants=[
                        Tenant(name="a", token=TEAM_A, namespace="team-a"),
                        Tenant(name="b", token=TEAM_B, namespace="team-b"),
                    ],
                ) as server,
                channel(f"127.0.0.1:{server.port}") as ch,
            ):
                yield (approvals if store else None), ch
    finally:
        gc.collect()


def remote(ch: grpc.aio.Channel, token: str) -> RemoteApprovals:
    async def give() -> grpc.aio.Channel:
        return ch

    return RemoteApprovals(give, lambda: auth(token), timeout_s=10)


async def test_a_remote_turn_waits_in_the_servers_store_until_resumed(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with serving(tmp_path) as (store, ch):
            assert store is not None
            agent = remote(ch, TEAM_A)
            ask = {
                "agent_id": "team-a:writer",
                "thread_id": "t",
                "turn_id": "turn-1",
                "call_id": "c1",
                "tool": "append_line",
                "arguments": {"line": "x"},
                "state": b"saved-turn",
                "timeout_s": 60.0,
            }
            record = await agent.request(**ask)  # type: ignore[arg-type]
            assert (record.status, record.agent_id, record.arguments) == (
                "pending",
                "team-a:writer",
                {"line": "x"},
            )
            assert (await agent.request(**ask)).id == record.id  # type: ignore[arg-type]
            (stored,) = await store.list()  # the server's own store holds it
            assert stored.id == record.id
            assert 59_000 <= stored.deadline_ms - stored.created_ms <= 60_000
            assert await agent.unresumed("team-a:writer") == []
            await store.approve(record.id, note="ok", by="cli")
            (decided,) = await agent.unresumed("team-a:writer")
            assert (decided.id, decided.status, decided.note) == (record.id, "approved", "ok")
            assert [r.id for r in await agent.for_turn("team-a:writer", "turn-1")] == [record.id]
            assert await agent.state(record.id) == b"saved-turn"
            await agent.mark_resumed("team-a:writer", "turn-1")
            assert await agent.unresumed("team-a:writer") == []
            assert (await store.get(record.id)).resumed


async def test_a_caller_waits_only_as_its_own_agents(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with serving(tmp_path) as (store, ch):
            assert store is not None
            theirs = await store.request(
                agent_id="team-a:writer",
                thread_id="t",
                turn_id="turn-1",
                call_id="c1",
                tool="append_line",
                arguments={},
                state=b"secret",
            )
            other = remote(ch, TEAM_B)
            with pytest.raises(LoomError, match="outside its namespace"):
                await other.unresumed("team-a:writer")
            with pytest.raises(LoomError, match="outside its namespace"):
                await other.request(
                    agent_id="team-a:writer",
                    thread_id="t",
                    turn_id="turn-2",
                    call_id="c1",
                    tool="append_line",
                    arguments={},
                )
            with pytest.raises(ApprovalNotFound):  # another tenant's record: as if absent
                await other.state(theirs.id)
            # The operator may act for any agent.
            assert await remote(ch, ADMIN).state(theirs.id) == b"secret"
            assert len(await store.list()) == 1  # nothing was added by the refused call


async def test_a_server_without_a_store_says_so(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with serving(tmp_path, store=False) as (_, ch):
            with pytest.raises(LoomError, match="this server keeps no approvals"):
                await remote(ch, TEAM_A).unresumed("team-a:writer")
