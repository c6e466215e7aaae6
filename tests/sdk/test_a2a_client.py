"""``A2AAgentTool``: remote A2A agents (the a2a-sdk's own server, real HTTP) as Loom tools,
called with ``ctx.tool``, from a ``CognitiveAgent``'s loop, cancelled, and failing by type."""

from __future__ import annotations

import socket
from typing import Any

import anyio
import anyio.abc
import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loom import (
    A2AAgentTool,
    A2AAuthFailed,
    A2ABadCard,
    A2AError,
    A2ATaskFailed,
    A2AUnreachable,
    Agent,
    CognitiveAgent,
    Context,
)
from loom.runtime import AgentRuntime, Event, EventBus, InvalidArgument
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall
from loom.runtime.tools import (
    ToolPermissionDenied,
    ToolRegistry,
    ToolTimeout,
    ToolUnavailable,
    tool_output_sink,
)

from ._a2a_support import (
    EchoExecutor,
    HangExecutor,
    StreamExecutor,
    bad_card_app,
    serve_a2a,
    serve_http,
)
from .test_cognitive_agent import ask, next_of, provider_for

pytestmark = pytest.mark.anyio

WAIT = 10.0


class Caller(Agent):
    """Calls the tool named in each event's payload with ``ctx.tool`` and records the outcome,
    with the partial output the tool streamed."""

    def __init__(self, tool: str, *, timeout: float | None = None) -> None:
        super().__init__("caller", topics=["call.*"])
        self.tool = tool
        self.timeout = timeout
        self.outcomes: list[Any] = []
        self.pieces: list[str] = []
        self.done = anyio.Event()

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
        async def sink(text: str) -> None:
            self.pieces.append(text)

        try:
            with tool_output_sink(sink):
                self.outcomes.append(
                    await ctx.tool(
                        self.tool, {"message": event.payload.decode()}, timeout=self.timeout
                    )
                )
        except Exception as exc:
            self.outcomes.append(exc)
        self.done.set()


async def call_with_ctx(tool: A2AAgentTool, text: str, **kw: Any) -> tuple[Any, list[str]]:
    """Register ``tool`` in a runtime and call it from an agent's handler with ``ctx.tool``."""
    registry = ToolRegistry()
    registry.register(tool)
    caller = Caller(tool.name, **kw)
    async with EventBus() as bus, AgentRuntime(bus, tools=registry) as runtime:
        await runtime.start(caller)
        await bus.publish("call.x", Event(type="call", payload=text.encode()))
        with anyio.fail_after(WAIT):
            await caller.done.wait()
    [outcome] = caller.outcomes
    return outcome, caller.pieces


# ---------------------------------------------------------------------- (a) ctx.tool


async def test_the_card_makes_the_tool() -> None:
    with anyio.fail_after(WAIT):
        async with serve_a2a(EchoExecutor(), name="echo") as url, A2AAgentTool(url) as tool:
            assert tool.name == "a2a.echo"
            assert tool.card.name == "echo"
            assert "The test's echo agent." in tool.description
            assert "- echo things: Does echo things" in tool.description
            assert "please echo this" in tool.description
            assert tool.parameters_schema["required"] == ["message"]
            assert tool.streaming


async def test_ctx_tool_calls_the_remote_agent() -> None:
    executor = EchoExecutor()
    async with (
        serve_a2a(executor, streaming=False) as url,
        A2AAgentTool(url, name="a2a.helper") as tool,
    ):
        outcome, pieces = await call_with_ctx(tool, "hello there")
    assert outcome["text"] == "echo: hello there"
    assert outcome["state"] == "completed"
    assert outcome["task_id"]
    assert outcome["context_id"]
    assert pieces == []  # message/send: nothing streams
    assert [m.parts[0].text for m in executor.seen] == ["hello there"]


async def test_streamed_output_reaches_the_callers_sink_in_order() -> None:
    async with serve_a2a(StreamExecutor(), name="stream") as url, A2AAgentTool(url) as tool:
        outcome, pieces = await call_with_ctx(tool, "one two three")
    assert outcome["text"] == "ONE TWO THREE "
    assert pieces == ["thinking… ", "ONE ", "TWO ", "THREE "]
    stats = tool.statistics()
    assert (stats.calls, stats.pieces, stats.remote_cancels) == (1, 4, 0)


async def test_a_result_beyond_its_bound_is_cut_and_says_so() -> None:
    words = " ".join(f"w{i:03}" for i in range(200))
    with anyio.fail_after(WAIT):
        async with (
            serve_a2a(StreamExecutor(), name="stream") as url,
            A2AAgentTool(url, max_result_bytes=100) as tool,
        ):
            pieces: list[str] = []

            async def sink(text: str) -> None:
                pieces.append(text)

            with tool_output_sink(sink):
                outcome = await tool.call({"message": words})
    assert outcome["text"].startswith("W000 W001 ")
    assert len(outcome["text"]) < 100
    assert outcome["cut"] > 0
    assert outcome["cut"] == tool.statistics().cut_bytes
    assert len(pieces) == 201  # what streams is not cut


async def test_a_conversation_continues_with_its_context_id() -> None:
    executor = EchoExecutor()
    with anyio.fail_after(WAIT):
        async with serve_a2a(executor) as url, A2AAgentTool(url) as tool:
            first = await tool.call({"message": "ask"})
            assert first["state"] == "input-required"
            assert first["text"] == "which city?"
            second = await tool.call(
                {"message": "Oslo", "context_id": first["context_id"], "task_id": first["task_id"]}
            )
    assert second["state"] == "completed"
    assert second["context_id"] == first["context_id"]
    assert executor.seen[1].context_id == first["context_id"]
    assert executor.seen[1].task_id == first["task_id"]


async def test_a_failed_remote_task_is_a_typed_error() -> None:
    with anyio.fail_after(WAIT):
        async with serve_a2a(EchoExecutor()) as url, A2AAgentTool(url) as tool:
            outcome, _ = await call_with_ctx(tool, "fail")
    assert isinstance(outcome, A2ATaskFailed)
    assert isinstance(outcome, A2AError)
    assert outcome.state == "failed"
    assert outcome.task_id
    assert "it went wrong" in str(outcome)
    assert outcome.tool == "a2a.echo"


async def test_the_call_carries_the_trace_of_ctx_tool() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[dict[str, str]] = []
    registry = ToolRegistry()
    caller = Caller("a2a.echo")
    try:
        async with serve_a2a(EchoExecutor(), headers_seen=seen) as url, A2AAgentTool(url) as tool:
            registry.register(tool)
            async with (
                EventBus(tracer_provider=provider) as bus,
                AgentRuntime(bus, tools=registry) as runtime,
            ):
                await runtime.start(caller)
                await bus.publish("call.x", Event(type="call", payload=b"traced"))
                with anyio.fail_after(WAIT):
                    await caller.done.wait()
    finally:
        provider.shutdown()
    assert caller.outcomes[0]["text"] == "echo: traced"
    [span] = [s for s in exporter.get_finished_spans() if s.name == "call_tool a2a.echo"]
    assert span.context is not None
    traced = [h["traceparent"] for h in seen if "traceparent" in h]
    assert traced  # the message/stream request
    assert all(f"{span.context.trace_id:032x}" in t for t in traced)
    assert "traceparent" not in seen[0]  # the card is fetched outside any call


# ---------------------------------------------------------------------- (b) the LLM loop


async def test_a_cognitive_agent_calls_the_remote_agent_and_streams_its_output() -> None:
    async with (
        serve_a2a(StreamExecutor(), name="shouter") as url,
        A2AAgentTool(url) as tool,
        ScriptedLLMServer() as server,
        provider_for(server) as llm,
    ):
        server.push(
            Reply(
                tool_calls=[
                    ScriptedToolCall(name="a2a_shouter", arguments={"message": "quiet words"})
                ]
            ),
            Reply(text="They said QUIET WORDS."),
        )
        agent = CognitiveAgent("assistant", llm=llm, tools=[tool], topics=["ask.*"])
        async with (
            EventBus() as bus,
            AgentRuntime(bus) as runtime,
            bus.subscribe("test.answers") as answers,
            bus.subscribe("agent.assistant.stream") as stream,
        ):
            await runtime.start(agent)
            await bus.publish("ask.x", ask("shout quiet words"))
            started = await next_of(stream, "turn.tool_started")
            outputs = [await next_of(stream, "turn.tool_output") for _ in range(3)]
            finished = await next_of(stream, "turn.tool_finished")
            reply = await next_of(answers, "agent.answer")
    assert reply.payload == b"They said QUIET WORDS."
    [offered] = server.requests[0].tools
    assert offered["function"]["name"] == "a2a_shouter"
    assert "shouter things" in offered["function"]["description"]
    assert msgspec.json.decode(started.payload)["name"] == "a2a.shouter"
    pieces = [msgspec.json.decode(e.payload) for e in outputs]
    assert [p["text"] for p in pieces] == ["thinking… ", "QUIET ", "WORDS "]
    assert {p["call_id"] for p in pieces} == {msgspec.json.decode(started.payload)["call_id"]}
    result = msgspec.json.decode(finished.payload)["result"]
    assert not result["is_error"]
    assert msgspec.json.decode(result["content"])["text"] == "QUIET WORDS "
    tool_messages = [m for m in server.requests[1].messages if m["role"] == "tool"]
    assert "QUIET WORDS" in tool_messages[0]["content"]


# ---------------------------------------------------------------------- (c) cancellation


async def test_a_timeout_cancels_the_remote_task() -> None:
    executor = HangExecutor()
    async with serve_a2a(executor, name="slow") as url, A2AAgentTool(url) as tool:
        outcome, _ = await call_with_ctx(tool, "take your time", timeout=1.0)
        with anyio.fail_after(WAIT):
            await executor.cancelled.wait()  # the remote executor's cancel() ran
    assert isinstance(outcome, ToolTimeout)
    assert len(executor.cancelled_ids) == 1
    stats = tool.statistics()
    assert (stats.remote_cancels, stats.remote_cancel_failures) == (1, 0)


async def test_cancelling_the_caller_cancels_the_remote_task() -> None:
    executor = HangExecutor()
    async with (
        serve_a2a(executor, name="slow", streaming=False) as url,
        A2AAgentTool(url, poll_interval_s=0.05) as tool,
    ):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(tool.call, {"message": "forever"})
                await executor.polled.wait()  # message/send answered: the task is named
                tg.cancel_scope.cancel()
            await executor.cancelled.wait()
    assert len(executor.cancelled_ids) == 1
    assert tool.statistics().polls >= 1


async def test_a_cognitive_agents_tool_timeout_cancels_the_remote_task() -> None:
    executor = HangExecutor()
    async with (
        serve_a2a(executor, name="slow") as url,
        A2AAgentTool(url) as tool,
        ScriptedLLMServer() as server,
        provider_for(server) as llm,
    ):
        server.push(
            Reply(tool_calls=[ScriptedToolCall(name="a2a_slow", arguments={"message": "x"})]),
            Reply(text="It took too long."),
        )
        agent = CognitiveAgent(
            "assistant", llm=llm, tools=[tool], tool_timeout_s=0.5, topics=["ask.*"]
        )
        async with (
            EventBus() as bus,
            AgentRuntime(bus) as runtime,
            bus.subscribe("agent.assistant.stream") as stream,
        ):
            await runtime.start(agent)
            await bus.publish("ask.x", ask("go"))
            finished = await next_of(stream, "turn.tool_finished")
            with anyio.fail_after(WAIT):
                await executor.cancelled.wait()
    assert msgspec.json.decode(finished.payload)["result"]["error_type"] == "ToolTimeout"


# ---------------------------------------------------------------------- (d) typed errors


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_url_is_a_typed_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # bound, then closed: nobody listens there
    with anyio.fail_after(WAIT), pytest.raises(A2AUnreachable) as caught:
        async with A2AAgentTool(url):
            pass
    assert isinstance(caught.value, ToolUnavailable)
    assert caught.value.url == url
    assert "ConnectError" in caught.value.reason


async def test_a_server_that_never_answers_the_card_is_unreachable_in_time() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    accepted: list[anyio.abc.SocketStream] = []

    async def hold(stream: anyio.abc.SocketStream) -> None:
        accepted.append(stream)
        async with stream:  # read nothing, answer nothing
            await anyio.sleep_forever()

    with anyio.fail_after(WAIT):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, hold)
            with pytest.raises(A2AUnreachable, match=r"no agent card within 0\.5 s"):
                async with A2AAgentTool(f"http://127.0.0.1:{port}", connect_timeout_s=0.5):
                    pass
            tg.cancel_scope.cancel()
    assert accepted


async def test_a_server_that_goes_away_makes_calls_unreachable() -> None:
    with anyio.fail_after(WAIT):
        async with serve_a2a(EchoExecutor(), streaming=False) as url:
            tool = A2AAgentTool(url)
            await tool.__aenter__()
        try:
            outcome, _ = await call_with_ctx(tool, "anyone?")
        finally:
            await tool.aclose()
    assert isinstance(outcome, A2AUnreachable)
    assert outcome.tool == "a2a.echo"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (lambda: b"not json", "JSON"),
        (lambda: ["a", "list"], "must be a JSON object"),
        (lambda: {"name": "x", "capabilities": {"streaming": "maybe"}}, "streaming"),
        (
            lambda: {
                "name": "grpc-only",
                "supportedInterfaces": [{"url": "x:1", "protocolBinding": "GRPC"}],
            },
            "no JSONRPC interface (it offers ['GRPC'])",
        ),
    ],
    ids=["not-json", "not-an-object", "wrong-field-type", "no-jsonrpc"],
)
async def test_a_bad_card_is_a_typed_error(body: Any, says: str) -> None:
    with anyio.fail_after(WAIT):
        async with serve_http(bad_card_app(body)) as url:
            with pytest.raises(A2ABadCard) as caught:
                async with A2AAgentTool(url):
                    pass
    assert says in str(caught.value)
    assert isinstance(caught.value, ToolUnavailable)


async def test_a_missing_card_is_a_bad_card() -> None:
    with anyio.fail_after(WAIT):
        async with serve_http(bad_card_app(dict)) as url:
            with pytest.raises(A2ABadCard, match="HTTP 404"):
                async with A2AAgentTool(url + "/elsewhere"):
                    pass


async def test_a_wrong_token_is_an_auth_error_and_the_right_one_works() -> None:
    with anyio.fail_after(WAIT):
        async with serve_a2a(EchoExecutor(), token="s3cret") as url:
            with pytest.raises(A2AAuthFailed) as caught:
                async with A2AAgentTool(url, token="wrong"):
                    pass
            async with A2AAgentTool(url, token="s3cret") as tool:
                assert (await tool.call({"message": "hi"}))["text"] == "echo: hi"
    assert isinstance(caught.value, ToolPermissionDenied)
    assert "HTTP 401" in str(caught.value)


async def test_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        A2AAgentTool("ftp://example.org")
    with pytest.raises(InvalidArgument):
        A2AAgentTool("http://example.org", connect_timeout_s=0)
    with pytest.raises(InvalidArgument, match="not open"):
        _ = A2AAgentTool("http://example.org").description
