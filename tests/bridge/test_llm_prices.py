"""The server's model has prices across the bridge: each answer of ``loom.v1.LLM`` carries its
price at the provider that served it (after a fallback too), ``ServerLLM.prices()`` says the
server's prices for a turn's estimate, and an old server (no ``priced``, no ``cost_usd``)
leaves the caller counting tokens only. Real gRPC servers on 127.0.0.1:0, the real OpenAI
provider talking HTTP to the scripted model."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import grpc
import grpc.aio
import pytest

from loom.bridge import BridgeServer, ServerLLM, WireError
from loom.bridge._generated import llm_pb2, llm_pb2_grpc
from loom.bridge._llm_convert import completion_from_proto, completion_to_proto
from loom.runtime import AgentRuntime, Budget, BudgetExhausted, BudgetLedger, EventBus
from loom.runtime.cognition._budgeting import TurnBudget
from loom.runtime.llm import (
    Completion,
    CompletionRequest,
    ModelPrices,
    ModelRouter,
    OpenAIProvider,
    ProviderConfig,
    StreamEnd,
    UserMessage,
)
from loom.runtime.testing import HTTPError, Reply, ScriptedLLMServer

pytestmark = pytest.mark.anyio

ASK = CompletionRequest(messages=(UserMessage(content="hi"),))
ANSWER = Reply(text="ok", prompt_tokens=1000, completion_tokens=500)


def _config(llm: ScriptedLLMServer, inp: float, out: float, cap: int) -> ProviderConfig:
    return ProviderConfig(
        kind="openai",
        model="scripted-model",
        base_url=llm.openai_base_url,
        timeout_s=10.0,
        max_retries=0,
        cost_per_1k_input=inp,
        cost_per_1k_output=out,
        max_output_tokens=cap,
    )


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[ScriptedLLMServer, grpc.aio.Channel]]:
    """A bridge server whose router tries ``dear`` first, then ``cheap``."""
    try:
        async with ScriptedLLMServer() as llm, EventBus(drain_grace=0.2) as bus:
            router = ModelRouter(
                {
                    "dear": OpenAIProvider("dear", _config(llm, 3.0, 6.0, 100)),
                    "cheap": OpenAIProvider("cheap", _config(llm, 1.0, 2.0, 300)),
                },
                owns_providers=True,
            )
            async with (
                router,
                AgentRuntime(bus, stop_timeout_s=1.0, llm=router) as rt,
                BridgeServer(rt, grace_s=0.5) as server,
                grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
            ):
                yield llm, channel
    finally:
        gc.collect()  # free the gRPC objects on this loop


async def test_an_answer_carries_the_price_of_the_provider_that_served_it() -> None:
    with anyio.fail_after(30):
        async with serving() as (scripted, channel):

            async def get() -> grpc.aio.Channel:
                return channel

            llm = ServerLLM(get)
            scripted.push(ANSWER)
            served = await llm.complete(ASK)
            # 1000 prompt tokens at 3.0 and 500 generated at 6.0 per 1000.
            assert served.provider == "dear"
            assert served.cost_usd == pytest.approx(6.0)
            # ``dear`` fails: ``cheap`` serves, at its own prices.
            scripted.push(HTTPError(status=500, message="down"), ANSWER)
            async with llm.stream(ASK) as chunks:
                [end] = [c async for c in chunks if isinstance(c, StreamEnd)]
            assert end.completion.provider == "cheap"
            assert end.completion.cost_usd == pytest.approx(2.0)
            # The estimate: the router's dearest prices and largest output cap, as in process.
            assert await llm.prices() == ModelPrices(
                cost_per_1k_input=3.0, cost_per_1k_output=6.0, max_output_tokens=300
            )
            assert await ServerLLM(get, model="cheap").prices() == ModelPrices(
                cost_per_1k_input=1.0, cost_per_1k_output=2.0, max_output_tokens=300
            )


async def test_a_turn_on_the_servers_model_is_priced_before_and_after_the_call() -> None:
    with anyio.fail_after(30):
        async with serving() as (scripted, channel):

            async def get() -> grpc.aio.Channel:
                return channel

            llm = ServerLLM(get, model="cheap")
            ledger = BudgetLedger()
            turn = TurnBudget(Budget(turn_cost_usd=4.5), ledger, llm, "agent", "thread")
            await turn.prepare()
            request = CompletionRequest(messages=ASK.messages, max_tokens=1000)
            pending = await turn.before(request, 1000)
            # 1000 prompt tokens at 1.0 and 1000 generated at 2.0 per 1000.
            assert pending.cost == pytest.approx(3.0)
            scripted.push(ANSWER)
            await turn.after(pending, await llm.complete(request))
            assert ledger.spend("agent", "agent").cost_usd == pytest.approx(2.0)
            # 2.0 spent, 3.0 more would pass the turn's 4.5: refused before the call.
            with pytest.raises(BudgetExhausted, match="budget turn_cost_usd exhausted"):
                await turn.before(request, 1000)


class _OldLLMService(llm_pb2_grpc.LLMServicer):
    """``loom.v1.LLM`` as a server older than prices answers it: ``ListModels`` has the
    providers' prices but no ``priced``, and answers carry no ``cost_usd``."""

    async def ListModels(self, request: Any, context: Any) -> llm_pb2.ListModelsResponse:
        info = llm_pb2.ModelInfo(name="old", cost_per_1k_input=1.0, cost_per_1k_output=2.0)
        return llm_pb2.ListModelsResponse(models=[info])

    async def Complete(self, request: Any, context: Any) -> AsyncIterator[Any]:
        end = llm_pb2.Completion(text="ok", provider="old")
        end.usage.prompt_tokens, end.usage.completion_tokens = 1000, 500
        yield llm_pb2.CompleteResponse(end=end)


async def test_an_old_server_leaves_the_caller_counting_tokens_only() -> None:
    server = grpc.aio.server()
    llm_pb2_grpc.add_LLMServicer_to_server(_OldLLMService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        with anyio.fail_after(30):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

                async def get() -> grpc.aio.Channel:
                    return channel

                llm = ServerLLM(get)
                assert await llm.prices() is None
                ledger = BudgetLedger()
                turn = TurnBudget(Budget(turn_cost_usd=0.001), ledger, llm, "agent", "thread")
                pending = await turn.before(ASK, 10)  # unpriced: a cost budget cannot refuse
                assert pending.cost == 0.0
                answer = await llm.complete(ASK)
                assert answer.cost_usd is None
                await turn.after(pending, answer)
                spent = ledger.spend("agent", "agent")
                assert (spent.tokens, spent.cost_usd) == (1500, 0.0)
    finally:
        await server.stop(None)
        gc.collect()


@pytest.mark.parametrize("cost", [None, 0.0, 0.25])
def test_an_answers_price_round_trips(cost: float | None) -> None:
    completion = Completion(text="hi", provider="p", cost_usd=cost)
    assert completion_from_proto(completion_to_proto(completion)).cost_usd == cost


@pytest.mark.parametrize("cost", [-1.0, float("nan"), float("inf")])
def test_a_price_that_is_not_a_number_at_least_zero_is_refused(cost: float) -> None:
    with pytest.raises(WireError, match=r"Completion\.cost_usd"):
        completion_from_proto(llm_pb2.Completion(text="hi", cost_usd=cost))
