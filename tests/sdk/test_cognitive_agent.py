"""``CognitiveAgent``: the loop hosted as an agent, over a real runtime and the scripted model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from loom import Agent, CognitiveAgent, capability
from loom.runtime import (
    AgentRuntime,
    Envelope,
    Event,
    EventBus,
    InvalidArgument,
    Subscription,
)
from loom.runtime.cognition import LoopConfig, TurnOutcome
from loom.runtime.collab import request
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.memory import DEFAULT_FILENAME, InMemoryStore
from loom.runtime.testing import HTTPError, Reply, ScriptedLLMServer, ScriptedToolCall
from loom.runtime.tools import FunctionTool

pytestmark = pytest.mark.anyio

WAIT = 5.0


@capability("text.upper")
async def upper(text: str) -> str:
    """Upper-case a text.

    Args:
        text: the text to upper-case.
    """
    return text.upper()


def provider_for(server: ScriptedLLMServer, **fields: Any) -> OpenAIProvider:
    config = ProviderConfig(
        kind="openai",
        model="scripted-model",
        base_url=server.openai_base_url,
        timeout_s=5.0,
        backoff_base_s=0.01,
        backoff_max_s=0.02,
        **fields,
    )
    return OpenAIProvider("scripted", config)


@asynccontextmanager
async def hosting(*agents: Agent) -> AsyncIterator[tuple[EventBus, AgentRuntime]]:
    async with EventBus() as bus, AgentRuntime(bus) as runtime:
        for agent in agents:
            await runtime.start(agent)
        yield bus, runtime


async def next_of(sub: Subscription, type: str) -> Event:
    """The next event of ``type`` on ``sub`` (others are skipped)."""
    with anyio.fail_after(WAIT):
        while True:
            delivery = await sub.receive()
            if delivery.event.type == type:
                return delivery.event


def ask(text: str, *, thread: str = "c1", reply_to: str = "test.answers") -> Event:
    return Event(
        type="ask", payload=text.encode(), envelope=Envelope(thread_id=thread, reply_to=reply_to)
    )


async def test_the_answer_is_replied_and_the_turn_streamed() -> None:
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(Reply(text="Hello there, friend.", chunk_size=5))
        agent = CognitiveAgent("assistant", llm=llm, topics=["ask.*"])
        async with (
            hosting(agent) as (bus, _),
            bus.subscribe("test.answers") as answers,
            bus.subscribe("agent.assistant.stream") as stream,
        ):
            question = ask("hi")
            await bus.publish("ask.general", question)
            reply = await next_of(answers, "agent.answer")
            end = await next_of(stream, "turn.end")
    assert reply.payload == b"Hello there, friend."
    assert reply.metadata["outcome"] == "answer"
    assert reply.metadata["iterations"] == "1"
    assert reply.envelope.thread_id == "c1"
    assert reply.envelope.correlation_id == question.id
    assert reply.source == "assistant"
    outcome = msgspec.json.decode(end.payload, type=TurnOutcome)
    assert (outcome.kind, outcome.answer, outcome.thread_id) == (
        "answer",
        "Hello there, friend.",
        "c1",
    )
    assert end.metadata == {"thread_id": "c1", "event_id": question.id}
    assert end.envelope.thread_id == "c1"


async def test_partial_text_arrives_before_the_end() -> None:
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(Reply(text="one two three four", chunk_size=4))
        agent = CognitiveAgent("assistant", llm=llm, topics=["ask.*"])
        async with hosting(agent) as (bus, _), bus.subscribe("agent.assistant.stream") as stream:
            await bus.publish("ask.general", ask("count"))
            seen: list[Event] = []
            with anyio.fail_after(WAIT):
                async for delivery in stream:
                    seen.append(delivery.event)
                    if delivery.event.type == "turn.end":
                        break
    types = [e.type for e in seen]
    assert types[-2:] == ["turn.model_call", "turn.end"]
    assert set(types[:-2]) == {"turn.text"}
    pieces = [msgspec.json.decode(e.payload)["text"] for e in seen[:-2]]
    assert len(pieces) > 1
    assert "".join(pieces) == "one two three four"
    assert all(e.metadata["thread_id"] == "c1" for e in seen)


async def test_a_request_gets_the_answer_back() -> None:
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(Reply(text="42"))
        agent = CognitiveAgent("oracle", llm=llm, topics=["oracle.ask"])
        async with hosting(agent) as (bus, _):
            reply = await request(bus, "oracle.ask", b"6*7?", timeout=WAIT)
    assert (reply.type, reply.payload) == ("agent.answer", b"42")


async def test_tools_and_the_turn_events() -> None:
    async def lookup(key: str) -> str:
        return {"colour": "blue"}[key]

    tool = FunctionTool(
        lookup,
        name="kv.lookup",
        description="Look a key up.",
        parameters_schema={"type": "object", "properties": {"key": {"type": "string"}}},
    )
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(
            Reply(tool_calls=[ScriptedToolCall(name="kv_lookup", arguments={"key": "colour"})]),
            Reply(text="It is blue."),
        )
        agent = CognitiveAgent("kv", llm=llm, tools=[tool], topics=["ask.*"])
        async with (
            hosting(agent) as (bus, _),
            bus.subscribe("test.answers") as answers,
            bus.subscribe("agent.kv.stream") as stream,
        ):
            await bus.publish("ask.x", ask("colour?"))
            started = await next_of(stream, "turn.tool_started")
            finished = await next_of(stream, "turn.tool_finished")
            reply = await next_of(answers, "agent.answer")
    assert msgspec.json.decode(started.payload)["name"] == "kv.lookup"
    assert msgspec.json.decode(finished.payload)["result"]["content"] == "blue"
    assert reply.payload == b"It is blue."
    assert [t["function"]["name"] for t in server.requests[0].tools] == ["kv_lookup"]


async def test_another_agents_capability_is_a_tool() -> None:
    helper = Agent("helper", capabilities=[upper])
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(
            Reply(tool_calls=[ScriptedToolCall(name="text_upper", arguments={"text": "abc"})]),
            Reply(text="It is ABC."),
        )
        agent = CognitiveAgent("writer", llm=llm, use_capabilities=["text.upper"], topics=["ask.*"])
        async with (
            hosting(helper, agent) as (bus, runtime),
            bus.subscribe("test.answers") as answers,
        ):
            await bus.publish("ask.x", ask("shout abc"))
            reply = await next_of(answers, "agent.answer")
            helper_info = runtime.directory.get("helper")
    assert reply.payload == b"It is ABC."
    [offered] = server.requests[0].tools
    assert offered["function"]["name"] == "text_upper"
    assert offered["function"]["description"] == "Upper-case a text."
    assert offered["function"]["parameters"]["properties"]["text"]["type"] == "string"
    tool_messages = [m for m in server.requests[1].messages if m["role"] == "tool"]
    assert tool_messages[0]["content"] == "ABC"
    assert helper_info is not None
    assert helper_info.capabilities == ("text.upper",)


async def test_a_capability_nobody_offers_is_not_offered() -> None:
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(Reply(text="no tools"))
        agent = CognitiveAgent("writer", llm=llm, use_capabilities=["text.upper"])
        async with hosting(agent) as (bus, _):
            await request(bus, mailbox(agent), b"hi", timeout=WAIT)
    assert "tools" not in server.requests[0].body


def mailbox(agent: Agent) -> str:
    return f"agent.{agent.agent_id}.replies"


async def test_the_conversation_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(Reply(text="Nice to meet you, Ada."), Reply(text="You are Ada."))
        for question, expected in (
            ("My name is Ada.", b"Nice to meet you, Ada."),
            ("What is my name?", b"You are Ada."),
        ):
            # A whole new runtime, bus and agent each time: only the data directory stays.
            agent = CognitiveAgent("memo", llm=llm, data_dir=data_dir, topics=["ask.*"])
            async with hosting(agent) as (bus, _), bus.subscribe("test.answers") as answers:
                await bus.publish("ask.x", ask(question, thread="conv-7"))
                reply = await next_of(answers, "agent.answer")
            assert reply.payload == expected
    assert (data_dir / DEFAULT_FILENAME).is_file()
    second = server.requests[1]
    assert second.messages == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"},
    ]


async def test_threads_are_separate_conversations() -> None:
    store = InMemoryStore()
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(Reply(text="a1"), Reply(text="b1"), Reply(text="a2"))
        agent = CognitiveAgent("memo", llm=llm, memory=store, topics=["ask.*"])
        async with hosting(agent) as (bus, _), bus.subscribe("test.answers") as answers:
            for text, thread in (("a", "A"), ("b", "B"), ("a again", "A")):
                await bus.publish("ask.x", ask(text, thread=thread))
                await next_of(answers, "agent.answer")
    assert [m["content"] for m in server.requests[2].messages] == ["a", "a1", "a again"]
    assert sorted(await store.threads("memo")) == ["A", "B"]


async def test_an_event_without_a_thread_goes_to_the_default_one() -> None:
    store = InMemoryStore()
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(Reply(text="ok"))
        agent = CognitiveAgent("memo", llm=llm, memory=store, topics=["ask.*"])
        async with hosting(agent) as (bus, _), bus.subscribe("agent.memo.stream") as stream:
            # No thread, no reply_to, no sender: nowhere to reply, the end event still comes.
            await bus.publish("ask.x", Event(type="ask", payload=b"hello"))
            end = await next_of(stream, "turn.end")
    assert msgspec.json.decode(end.payload, type=TurnOutcome).answer == "ok"
    assert await store.threads("memo") == ["default"]


async def test_a_failed_turn_is_replied_as_such() -> None:
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(HTTPError(status=400, message="no such model"))
        agent = CognitiveAgent("assistant", llm=llm, topics=["ask.*"])
        async with hosting(agent) as (bus, _), bus.subscribe("test.answers") as answers:
            await bus.publish("ask.x", ask("hi"))
            reply = await next_of(answers, "agent.error")
    assert reply.payload == b""
    assert reply.metadata["outcome"] == "error"
    assert "no such model" in reply.metadata["error"]


async def test_a_turn_without_an_answer_is_replied_as_budget_exhausted() -> None:
    tool = FunctionTool(
        lambda: "again", name="again", description="", parameters_schema={"type": "object"}
    )
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(*[Reply(tool_calls=[ScriptedToolCall(name="again")])] * 2)
        agent = CognitiveAgent(
            "assistant", llm=llm, tools=[tool], max_iterations=2, topics=["ask.*"]
        )
        async with hosting(agent) as (bus, _), bus.subscribe("test.answers") as answers:
            await bus.publish("ask.x", ask("hi"))
            reply = await next_of(answers, "agent.budget_exhausted")
    assert reply.metadata["iterations"] == "2"


async def test_cancelling_a_running_turn() -> None:
    started = anyio.Event()
    saw_cancel = anyio.Event()

    async def hang() -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            saw_cancel.set()
            raise
        raise AssertionError("unreachable")

    tool = FunctionTool(hang, name="hang", description="", parameters_schema={"type": "object"})
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(Reply(tool_calls=[ScriptedToolCall(name="hang")]))
        agent = CognitiveAgent("assistant", llm=llm, tools=[tool], topics=["ask.*"])
        async with hosting(agent) as (bus, _), bus.subscribe("test.answers") as answers:
            await bus.publish("ask.x", ask("hi", thread="t9"))
            with anyio.fail_after(WAIT):
                await started.wait()
            assert agent.cancel("other-thread") == 0
            assert agent.cancel("t9") == 1
            reply = await next_of(answers, "agent.cancelled")
    assert saw_cancel.is_set()
    assert reply.metadata["outcome"] == "cancelled"


async def test_configuration() -> None:
    llm: Any = object()
    agent = CognitiveAgent(
        "a",
        llm=llm,
        config=LoopConfig(max_iterations=3, temperature=0.2),
        system_prompt="Be nice.",
        max_parallel_tools=2,
    )
    assert agent.config == LoopConfig(
        max_iterations=3, temperature=0.2, system_prompt="Be nice.", max_parallel_tools=2
    )
    assert agent.stream_topic == "agent.a.stream"
    assert CognitiveAgent("b", llm=llm, stream_topic="ui.b").stream_topic == "ui.b"
    with pytest.raises(InvalidArgument, match="not both"):
        CognitiveAgent("a", llm=llm, memory=InMemoryStore(), data_dir="x")
    with pytest.raises(InvalidArgument, match="max_iterations"):
        CognitiveAgent("a", llm=llm, max_iterations=0)
    fresh = agent.fresh()
    assert isinstance(fresh, CognitiveAgent)
    assert fresh.config == agent.config


async def test_responding_before_start_is_refused() -> None:
    llm: Any = object()
    agent = CognitiveAgent("a", llm=llm)
    ctx: Any = None
    with pytest.raises(InvalidArgument, match="not started"):
        await agent.respond(ctx, Event())


@capability("math.add")
async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def test_a_remote_cognitive_agent_uses_the_servers_tools() -> None:
    """Connected through the bridge, the agent is offered what the server lists (another
    agent's capability, a tool of the server's runtime) and calls them through it."""
    from loom._remote import serve_agent
    from loom.bridge import BridgeServer
    from loom.runtime.tools import ToolRegistry

    runtime_tools = ToolRegistry()
    runtime_tools.register(add)
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(
            Reply(
                tool_calls=[
                    ScriptedToolCall(name="text_upper", arguments={"text": "abc"}),
                    ScriptedToolCall(name="math_add", arguments={"a": 2, "b": 3}),
                ]
            ),
            Reply(text="ABC and 5."),
        )
        agent = CognitiveAgent(
            "far-writer", llm=llm, use_capabilities=["text.upper", "math.add"], topics=["ask.*"]
        )
        async with (
            EventBus() as bus,
            AgentRuntime(bus, tools=runtime_tools) as runtime,
            BridgeServer(runtime, port=0) as bridge,
            bus.subscribe("test.answers") as answers,
        ):
            await runtime.start(Agent("helper", capabilities=[upper]))
            async with anyio.create_task_group() as tg:
                await tg.start(serve_agent, agent, bridge.address)
                info = runtime.directory.get("far-writer")
                assert info is not None
                assert info.remote
                await bus.publish("ask.x", ask("shout abc, add 2 and 3"))
                reply = await next_of(answers, "agent.answer")
                tg.cancel_scope.cancel()
    assert reply.payload == b"ABC and 5."
    offered = {tool["function"]["name"] for tool in server.requests[0].tools}
    assert offered == {"text_upper", "math_add"}
    results = [m["content"] for m in server.requests[1].messages if m["role"] == "tool"]
    assert results == ["ABC", "5"]


async def test_routing_decisions_are_published_as_debug_events() -> None:
    """With a ModelRouter, every decision goes out on the stream topic as an ``llm.route``
    event, with its reason, before the turn's end."""
    from loom.runtime.llm import ModelRouter

    async with ScriptedLLMServer() as server, provider_for(server) as up:
        server.push(Reply(text="routed"))
        down = OpenAIProvider(
            "down",
            ProviderConfig(
                kind="openai",
                model="m",
                base_url="http://127.0.0.1:9/v1",  # the discard port: refused at once
                timeout_s=2.0,
                max_retries=0,
            ),
        )
        router = ModelRouter({"down": down, "up": up}, owns_providers=False)
        agent = CognitiveAgent("routed", llm=router, topics=["ask.*"])
        async with (
            hosting(agent) as (bus, _),
            bus.subscribe(agent.stream_topic) as stream,
            bus.subscribe("test.answers") as answers,
        ):
            await bus.publish("ask.x", ask("hi"))
            route = await next_of(stream, "llm.route")
            await next_of(stream, "turn.end")
            reply = await next_of(answers, "agent.answer")
        await down.aclose()
    decision = msgspec.json.decode(route.payload)
    assert decision["chosen"] == "up"
    assert [a["provider"] for a in decision["attempts"]] == ["down", "up"]
    assert "up" in route.metadata["reason"]
    assert reply.payload == b"routed"
