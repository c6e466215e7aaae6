"""``loom.v1.Budgets`` on a real bridge server, and what a remote agent's ledger does when the
server cannot answer (``bridge/_budget_remote.py``): holds and settles land in the server's
ledger; a refusal names the budget; a silent or absent server fails closed; a server without
the service (an older Loom) leaves the spend local."""

from __future__ import annotations

import gc
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import grpc
import grpc.aio
import pytest

from loom.bridge import RemoteBudgets
from loom.runtime import Budget, BudgetExhausted, BudgetUnavailable, InvalidArgument, TenantBudget

from ._client_support import hosting

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def budgets_at(address: str, *, timeout_s: float = 5.0) -> AsyncIterator[RemoteBudgets]:
    channel = grpc.aio.insecure_channel(address)
    try:

        async def give() -> grpc.aio.Channel:
            return channel

        yield RemoteBudgets(give, tuple, timeout_s=timeout_s)
    finally:
        await channel.close(None)
        gc.collect()


async def test_holds_and_settles_count_in_the_servers_ledger() -> None:
    async with hosting() as host, budgets_at(host.address) as budgets:
        ledger = host.runtime.budgets
        ledger.configure(tenants={"team-a": TenantBudget(tokens=1000)})
        with anyio.fail_after(20):
            hold = await budgets.hold(
                agent_id="team-a:w", thread_id="t", budget=Budget(), tokens=600, cost=0.5
            )
            assert hold is not None
            # Held at once: a second call that would go past the tenant's 1000 is refused.
            with pytest.raises(BudgetExhausted) as refused:
                await budgets.hold(
                    agent_id="team-a:x", thread_id="t", budget=Budget(), tokens=600, cost=0.0
                )
            await hold.settle(110, 0.21)
            # The agent's own limits count there too (agent_tokens 100 < 110 spent).
            with pytest.raises(BudgetExhausted) as own:
                await budgets.hold(
                    agent_id="team-a:w",
                    thread_id="t",
                    budget=Budget(agent_tokens=100),
                    tokens=1,
                    cost=0.0,
                )
    assert (refused.value.budget, refused.value.limit) == ("tenant_tokens", 1000)
    assert (refused.value.spent, refused.value.needed) == (600, 600)
    assert own.value.budget == "agent_tokens"
    stats = ledger.statistics()
    assert (stats.tokens, stats.cost_usd, stats.calls) == (110, 0.21, 1)
    assert dict(stats.exhausted) == {"tenant_tokens": 1, "agent_tokens": 1}
    assert ledger.spend("tenant", "team-a").tokens == 110


async def test_a_hold_names_its_agent() -> None:
    async with hosting() as host, budgets_at(host.address) as budgets:
        with anyio.fail_after(20), pytest.raises(InvalidArgument, match="agent_id: must not"):
            await budgets.hold(agent_id="", thread_id="t", budget=Budget(), tokens=1, cost=0.0)


async def test_a_server_that_does_not_answer_refuses_the_call() -> None:
    # A port that takes connections and never speaks: the hold's deadline passes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        async with budgets_at(address, timeout_s=0.5) as budgets:
            with anyio.fail_after(20), pytest.raises(BudgetUnavailable) as caught:
                await budgets.hold(agent_id="a", thread_id="t", budget=Budget(), tokens=1, cost=0.0)
    assert caught.value.budget == "budget_ledger"
    assert "did not answer Hold within 0.5 s" in str(caught.value)
    assert "the call was not made" in str(caught.value)


async def test_a_server_gone_refuses_the_call() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        async with budgets_at(address) as budgets:
            with anyio.fail_after(20), pytest.raises(BudgetUnavailable) as caught:
                await budgets.hold(agent_id="a", thread_id="t", budget=Budget(), tokens=1, cost=0.0)
    assert "Budgets.Hold failed" in str(caught.value)


async def test_a_server_without_the_service_leaves_the_spend_local() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with budgets_at(f"127.0.0.1:{port}") as budgets:
            with anyio.fail_after(20):
                first = await budgets.hold(
                    agent_id="a", thread_id="t", budget=Budget(), tokens=1, cost=0.0
                )
                again = await budgets.hold(
                    agent_id="a", thread_id="t", budget=Budget(), tokens=1, cost=0.0
                )
    finally:
        await server.stop(None)
    assert (first, again, budgets.absent) == (None, None, True)
