"""``loom.v1.LLM``: the server's model router for agents elsewhere. A real gRPC server whose
runtime has a router over the real OpenAI provider, talking HTTP to the scripted model; the
client is ``BridgeClient.llm()`` (or the raw stub, as any gRPC client would call it)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from loom.bridge import BridgeServer, ServerLLM, Unauthenticated
from loom.bridge._client import AgentRegistration, BridgeClient
from loom.bridge._generated import llm_pb2, llm_pb2_grpc
from loom.runtime import AgentRuntime, DeadlineExceeded, EventBus
from loom.runtime.llm import (
    LLM,
    CompletionRequest,
    ModelRouter,
    NoModelConfigured,
    NoProviderAvailable,
    OpenAIProvider,
    ProviderConfig,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
    StreamChunk,
    StreamEnd,
    TextDelta,
    ToolCallReady,
    ToolSpec,
    UnknownModel,
    UserMessage,
)
from loom.runtime.testing import Delay, HTTPError, Reply, ScriptedLLMServer, ScriptedToolCall

from ._client_support import FAST

pytestmark = pytest.mark.anyio

TOKEN = "a-test-token-long-enough-to-pass"
ASK = CompletionRequest(messages=(UserMessage(content="hi"),))


@dataclass
class Served:
    llm: ScriptedLLMServer
    server: BridgeServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def _config(llm: ScriptedLLMServer, **fields: object) -> ProviderConfig:
    return ProviderConfig(
        kind="openai",
        model="scripted-model",
        base_url=llm.openai_base_url,
        timeout_s=10.0,
        max_retries=0,
        **fields,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def serving(*, with_model: bool = True, token: str | None = None) -> AsyncIterator[Served]:
    try:
        async with ScriptedLLMServer() as llm, EventBus(drain_grace=0.2) as bus:
            router = ModelRouter(
                {"scripted": OpenAIProvider("scripted", _config(llm))}, owns_providers=True
            )
            async with (
                router,
                AgentRuntime(bus, stop_timeout_s=1.0, llm=router if with_model else None) as rt,
                BridgeServer(rt, token=token, grace_s=0.5) as server,
            ):
                yield Served(llm, server)
    finally:
        gc.collect()  # as _server_harness.serving: free the gRPC objects on this loop


@asynccontextmanager
async def model(served: Served, *, model: str = "", token: str | None = None) -> AsyncIterator[LLM]:
    """The server's model through a connected agent's client."""
    registration = AgentRegistration(agent_id="thinker")
    async with BridgeClient(served.address, registration, token=token, options=FAST) as client:
        yield client.llm(model)


async def drain(llm: LLM, request: CompletionRequest) -> list[StreamChunk]:
    """Every chunk of a streamed answer."""
    async with llm.stream(request) as chunks:
        return [chunk async for chunk in chunks]


async def abandoned_all(served: Served) -> None:
    """Until every request that reached the model was abandoned (its connection closed).

    A deadline of half a second may pass, on a loaded machine, before the provider's request
    reaches the model at all: then there is nothing there to abandon, and waiting for one
    abandonment waited for what could not come. One that arrives after this returns arrives
    on a connection already closed."""
    await served.llm.wait_abandoned(len(served.llm.requests))


@asynccontextmanager
async def raw(served: Served) -> AsyncIterator[llm_pb2_grpc.LLMAsyncStub]:
    async with grpc.aio.insecure_channel(served.address) as ch:
        yield llm_pb2_grpc.LLMStub(ch)


async def test_a_streamed_answer_arrives_in_pieces_with_its_tool_calls() -> None:
    async with serving() as s, model(s) as llm:
        call = ScriptedToolCall(name="fs_read", arguments={"path": "README.md"})
        s.llm.push(Reply(text="Let me look.", tool_calls=[call], chunk_size=3))
        request = CompletionRequest(
            messages=(UserMessage(content="read it"),),
            tools=(ToolSpec(name="fs.read", description="read a file"),),
            max_tokens=77,
            temperature=0.25,
        )
        with anyio.fail_after(10):
            async with llm.stream(request) as chunks:
                got = [chunk async for chunk in chunks]
    texts = [c.text for c in got if isinstance(c, TextDelta)]
    assert len(texts) > 1
    assert "".join(texts) == "Let me look."
    calls = [c.call for c in got if isinstance(c, ToolCallReady)]
    assert [(c.name, dict(c.arguments), c.error) for c in calls] == [
        ("fs.read", {"path": "README.md"}, None)
    ]
    end = got[-1]
    assert isinstance(end, StreamEnd)
    completion = end.completion
    assert completion.text == "Let me look."
    assert completion.tool_calls == tuple(calls)
    assert completion.finish_reason == "tool_calls"
    assert completion.provider == "scripted"
    assert completion.usage.completion_tokens > 0
    # What reached the model is what the agent asked, with the tool's wire name.
    body = s.llm.requests[0].body
    assert body["max_tokens"] == 77
    assert body["temperature"] == 0.25
    assert [t["function"]["name"] for t in body["tools"]] == ["fs_read"]
    assert body["stream"] is True


async def test_complete_asks_for_the_whole_answer() -> None:
    async with serving() as s, model(s, model="scripted") as llm:
        s.llm.push(Reply(text="whole"))
        with anyio.fail_after(10):
            completion = await llm.complete(ASK)
    assert completion.text == "whole"
    assert s.llm.requests[0].body.get("stream") in (None, False)
    assert llm.name == "server:scripted"


async def test_a_request_deadline_abandons_the_model_call_on_the_server() -> None:
    async with serving() as s, model(s) as llm:
        s.llm.push(Delay(seconds=30))
        request = CompletionRequest(messages=(UserMessage(content="hi"),), timeout_s=0.5)
        with anyio.fail_after(5):
            with pytest.raises(ProviderTimeout) as caught:
                await drain(llm, request)
            assert isinstance(caught.value, DeadlineExceeded)
            # The provider's HTTP request was given up: the model sees its connection close.
            await abandoned_all(s)


async def test_a_router_that_ran_out_of_the_callers_time_says_timeout() -> None:
    # No gRPC deadline: the request's own timeout_s ends the model call on the server, and
    # the router's "every provider failed" arrives as what it was, the caller's deadline.
    # (Before: NoProviderAvailable whenever the server's clock beat the caller's.)
    async with serving() as s, raw(s) as stub:
        s.llm.push(Delay(seconds=30))
        request = llm_pb2.CompleteRequest(
            messages=[llm_pb2.LLMMessage(user=llm_pb2.UserMessage(content="hi"))],
            stream=True,
            timeout_s=0.5,
        )
        with anyio.fail_after(10):
            call = stub.Complete(request)
            frames: list[llm_pb2.CompleteResponse] = []

            async def read() -> None:
                async for frame in call:
                    frames.append(frame)

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await read()
            assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            assert [f.error.kind for f in frames] == [llm_pb2.LLMFailure.LLM_TIMEOUT]
            await abandoned_all(s)


async def test_the_grpc_deadline_alone_bounds_the_call_on_the_server() -> None:
    async with serving() as s, raw(s) as stub:
        s.llm.push(Delay(seconds=30))
        request = llm_pb2.CompleteRequest(
            messages=[llm_pb2.LLMMessage(user=llm_pb2.UserMessage(content="hi"))], stream=True
        )
        with anyio.fail_after(5):
            call = stub.Complete(request, timeout=0.5)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
            assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            await abandoned_all(s)


async def test_a_cancelled_caller_cancels_the_model_call_on_the_server() -> None:
    async with serving() as s, model(s) as llm:
        s.llm.push(Delay(seconds=30), Reply(text="after"))
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain, llm, ASK)
                await s.llm.wait_requests()  # the model call is under way
                tg.cancel_scope.cancel()
            await s.llm.wait_abandoned()
            # The server is fine and the next call is answered.
            assert (await llm.complete(ASK)).text == "after"


async def test_an_enclosing_scope_deadline_is_the_calls_deadline() -> None:
    async with serving() as s, model(s) as llm:
        s.llm.push(Delay(seconds=30))
        with anyio.fail_after(5):
            with anyio.move_on_after(0.3) as scope:
                await llm.complete(ASK)
            assert scope.cancelled_caught
            await abandoned_all(s)


async def test_an_unknown_model_is_unknown_model() -> None:
    async with serving() as s, model(s, model="gpt-nine") as llm:
        with anyio.fail_after(5), pytest.raises(UnknownModel) as caught:
            await llm.complete(ASK)
        assert str(caught.value) == "no model 'gpt-nine' (have: scripted)"
        async with raw(s) as stub:
            call = stub.Complete(
                llm_pb2.CompleteRequest(
                    model="gpt-nine",
                    messages=[llm_pb2.LLMMessage(user=llm_pb2.UserMessage(content="hi"))],
                )
            )
            with pytest.raises(grpc.aio.AioRpcError) as status:
                async for _ in call:
                    pass
            assert status.value.code() is grpc.StatusCode.NOT_FOUND
    assert not s.llm.requests


async def test_provider_errors_arrive_as_their_own_classes() -> None:
    async with serving() as s, model(s, model="scripted") as llm:
        s.llm.push(
            HTTPError(status=429, message="slow down", retry_after=7),
            HTTPError(status=400, message="maximum context length is 8192 tokens"),
        )
        with anyio.fail_after(10):
            with pytest.raises(RateLimited) as limited:
                await llm.complete(ASK)
            with pytest.raises(RequestRejected) as rejected:
                await drain(llm, ASK)
    assert limited.value.retry_after == 7
    assert limited.value.provider == "scripted"
    assert "slow down" in str(limited.value)
    assert rejected.value.status == 400
    assert "maximum context length" in str(rejected.value)


async def test_the_routers_failure_carries_the_providers_as_its_cause() -> None:
    async with serving() as s, model(s) as llm:
        s.llm.push(HTTPError(status=429, message="slow down", retry_after=3))
        with anyio.fail_after(10), pytest.raises(NoProviderAvailable) as caught:
            await llm.complete(ASK)
    assert str(caught.value) == "no provider served the request; scripted failed (RateLimited)"
    cause = caught.value.__cause__
    assert isinstance(cause, RateLimited)
    assert (cause.provider, cause.retry_after) == ("scripted", 3)


async def test_a_server_without_a_model_says_so() -> None:
    async with serving(with_model=False) as s, model(s) as llm:
        with anyio.fail_after(5), pytest.raises(NoModelConfigured, match=r"\[llm\.<name>\]"):
            await llm.complete(ASK)
        async with grpc.aio.insecure_channel(s.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            reply = await health.Check(health_pb2.HealthCheckRequest(service="loom.v1.LLM"))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            listed = await llm_pb2_grpc.LLMStub(ch).ListModels(llm_pb2.ListModelsRequest())
            assert not listed.models


async def test_list_models_and_health_with_a_model() -> None:
    async with serving() as s, raw(s) as stub:
        listed = await stub.ListModels(llm_pb2.ListModelsRequest())
        assert [(m.name, m.kind, m.model) for m in listed.models] == [
            ("scripted", "openai", "scripted-model")
        ]
        async with grpc.aio.insecure_channel(s.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            reply = await health.Check(health_pb2.HealthCheckRequest(service="loom.v1.LLM"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_unauthenticated_call_reaches_no_model() -> None:
    async with serving(token=TOKEN) as s:
        async with grpc.aio.insecure_channel(s.address) as ch:
            llm = ServerLLM(_channel_of(ch))  # no token in its metadata
            with anyio.fail_after(5), pytest.raises(Unauthenticated):
                await llm.complete(ASK)
            wrong = ServerLLM(_channel_of(ch), lambda: (("authorization", "Bearer nope"),))
            with anyio.fail_after(5), pytest.raises(Unauthenticated):
                await wrong.complete(ASK)
        s.llm.push(Reply(text="with the token"))
        async with model(s, token=TOKEN) as llm_ok:
            assert (await llm_ok.complete(ASK)).text == "with the token"
    assert len(s.llm.requests) == 1


async def test_a_malformed_request_is_invalid_argument() -> None:
    async with serving() as s, raw(s) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.Complete(llm_pb2.CompleteRequest()):  # no message
                pass
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "at least one message" in (caught.value.details() or "")


def _channel_of(ch: grpc.aio.Channel):  # type: ignore[no-untyped-def]
    async def channel() -> grpc.aio.Channel:
        return ch

    return channel


async def test_a_server_that_stops_mid_call_is_provider_unavailable() -> None:
    async with serving() as s, model(s) as llm:
        s.llm.push(Delay(seconds=30))
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def stop_when_asked() -> None:
                    await s.llm.wait_requests()
                    await s.server.aclose(grace_s=0.2)

                tg.start_soon(stop_when_asked)
                with pytest.raises(ProviderUnavailable):
                    await llm.complete(ASK)
            await s.llm.wait_abandoned()
