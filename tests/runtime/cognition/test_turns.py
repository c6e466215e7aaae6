"""The perceive-think-act loop against a scripted model, over the real OpenAI provider path."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from loom.runtime import InvalidArgument
from loom.runtime.cognition import (
    Loop,
    LoopConfig,
    ModelCall,
    TextChunk,
    ToolFinished,
    ToolStarted,
    TurnOutcome,
)
from loom.runtime.llm import ModelRouter, OpenAIProvider
from loom.runtime.memory import AgentContext, InMemoryStore
from loom.runtime.testing import (
    Delay,
    HTTPError,
    RecordedRequest,
    Reply,
    ScriptedLLMServer,
    ScriptedToolCall,
)
from loom.runtime.tools import FunctionTool

from ._loop_support import OBJECT, Updates, echo_tool, provider_config, roles, scripted_loop

pytestmark = pytest.mark.anyio


def call(name: str = "echo", arguments: str | dict[str, Any] | None = None) -> ScriptedToolCall:
    return ScriptedToolCall(name=name, arguments={} if arguments is None else arguments)


async def test_a_tool_call_then_the_answer() -> None:
    async with scripted_loop(tools=[echo_tool()]) as (server, loop, context):
        server.push(Reply(tool_calls=[call(arguments={"text": "hi"})]), Reply(text="done"))
        outcome = await loop.run(context, "say hi")

    assert outcome.kind == "answer"
    assert outcome.answer == "done"
    assert outcome.iterations == 2
    [result] = outcome.tool_results
    assert (result.name, result.content, result.is_error) == ("echo", "echo: hi", False)
    assert result.arguments == {"text": "hi"}
    assert outcome.usage.prompt_tokens > 0
    assert outcome.usage.completion_tokens > 0
    assert outcome.finish_reason == "stop"

    first, second = server.requests
    # The tool goes out as a well-formed chat-completions function tool.
    assert first.tools == [
        {
            "type": "function",
            "function": {
                "name": "echo",
                "description": "Echo the text.",
                "parameters": {
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"],
                },
            },
        }
    ]
    assert roles(first.messages) == ["user"]
    assert first.messages[0]["content"] == "say hi"
    assert roles(second.messages) == ["user", "assistant", "tool"]
    assistant, tool = second.messages[1], second.messages[2]
    [wire_call] = assistant["tool_calls"]
    assert wire_call["function"] == {"name": "echo", "arguments": '{"text": "hi"}'}
    assert tool == {"role": "tool", "tool_call_id": wire_call["id"], "content": "echo: hi"}

    # The whole exchange is in the conversation, answer included.
    history = await context.history()
    assert [(i.kind, i.role) for i in history] == [
        ("message", "user"),
        ("tool_call", "assistant"),
        ("tool_result", "tool"),
        ("message", "assistant"),
    ]
    assert history[-1].content == "done"


async def test_the_system_prompt_leads_and_the_conversation_carries_on() -> None:
    config = LoopConfig(system_prompt="You are terse.")
    async with scripted_loop(config=config) as (server, loop, context):
        server.push(Reply(text="first answer"), Reply(text="second answer"))
        await loop.run(context, "first question")
        outcome = await loop.run(context, "second question")
    assert outcome.answer == "second answer"
    messages = server.requests[1].messages
    assert messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]


async def test_parallel_tool_calls_never_exceed_the_cap() -> None:
    cap, total = 2, 5
    active = peak = started = 0
    changed = anyio.Condition()

    async def work(n: int) -> int:
        nonlocal active, peak, started
        active += 1
        started += 1
        peak = max(peak, active)
        async with changed:
            changed.notify_all()
        try:
            # Hold the slot until the cap is reached (or nobody else can come): this proves
            # the calls overlap, and the peak proves they never overlap more than the cap.
            with anyio.fail_after(5):
                async with changed:
                    while active < cap and started < total:
                        await changed.wait()
            await anyio.lowlevel.checkpoint()
        finally:
            active -= 1
            async with changed:
                changed.notify_all()
        return n * 10

    tool = FunctionTool(
        work,
        name="work",
        description="Work on n.",
        parameters_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
    )
    config = LoopConfig(max_parallel_tools=cap)
    async with scripted_loop(tools=[tool], config=config) as (server, loop, context):
        server.push(
            Reply(tool_calls=[call("work", {"n": n}) for n in range(total)]), Reply(text="ok")
        )
        outcome = await loop.run(context, "work")
    assert outcome.kind == "answer"
    assert peak == cap
    # Results keep the order of the calls, whatever order they finished in.
    assert [r.content for r in outcome.tool_results] == [str(n * 10) for n in range(total)]
    tool_messages = [m for m in server.requests[1].messages if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [str(n * 10) for n in range(total)]


async def test_the_default_cap_is_five() -> None:
    assert LoopConfig().max_parallel_tools == 5


async def test_a_failing_tool_is_an_error_result_and_the_loop_goes_on() -> None:
    async def boom() -> str:
        raise RuntimeError("the disk is on fire")

    failing = FunctionTool(boom, name="boom", description="Fails.", parameters_schema=OBJECT)
    async with scripted_loop(tools=[failing, echo_tool()]) as (server, loop, context):
        server.push(
            Reply(tool_calls=[call("boom"), call("echo", {"text": "still here"})]),
            Reply(text="recovered"),
        )
        outcome = await loop.run(context, "try")
    assert outcome.kind == "answer"
    assert outcome.answer == "recovered"
    bad, good = outcome.tool_results
    assert bad.is_error
    assert bad.error_type == "ToolFailed"
    assert "the disk is on fire" in bad.content
    assert (good.is_error, good.content) == (False, "echo: still here")
    tool_messages = [m for m in server.requests[1].messages if m["role"] == "tool"]
    assert "RuntimeError: the disk is on fire" in tool_messages[0]["content"]
    assert tool_messages[1]["content"] == "echo: still here"
    stored = [i for i in await context.history() if i.kind == "tool_result"]
    assert [i.metadata.get("is_error") for i in stored] == ["true", None]


async def test_a_tool_that_times_out_is_an_error_result() -> None:
    async def stuck() -> str:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    slow = FunctionTool(stuck, name="stuck", description="Hangs.", parameters_schema=OBJECT)
    config = LoopConfig(tool_timeout_s=0.05)
    async with scripted_loop(tools=[slow], config=config) as (server, loop, context):
        server.push(Reply(tool_calls=[call("stuck")]), Reply(text="gave up on it"))
        outcome = await loop.run(context, "go")
    assert outcome.kind == "answer"
    [result] = outcome.tool_results
    assert (result.is_error, result.error_type) == (True, "ToolTimeout")


async def test_bad_tool_calls_are_fed_back_as_errors() -> None:
    async with scripted_loop(tools=[echo_tool()]) as (server, loop, context):
        server.push(
            Reply(
                tool_calls=[
                    call("echo", '{"text": "unterminated'),  # not JSON
                    call("echo", '["a", "list"]'),  # JSON, not an object
                    call("nope", {}),  # not offered
                    call("echo", {"text": 5}),  # fails the schema
                ]
            ),
            Reply(text="sorry"),
        )
        outcome = await loop.run(context, "go")
    assert outcome.kind == "answer"
    kinds = [r.error_type for r in outcome.tool_results]
    assert kinds == [
        "MalformedToolArguments",
        "MalformedToolArguments",
        "UnknownTool",
        "InvalidToolArguments",
    ]
    assert all(r.is_error for r in outcome.tool_results)
    follow_up = server.requests[1].messages
    [assistant] = [m for m in follow_up if m["role"] == "assistant"]
    # A malformed call goes back with "{}" (servers parse history), the error in its answer.
    assert [c["function"]["arguments"] for c in assistant["tool_calls"][:2]] == ["{}", "{}"]
    tool_messages = [m for m in follow_up if m["role"] == "tool"]
    assert len(tool_messages) == 4
    assert "not valid JSON" in tool_messages[0]["content"]
    assert "not an object" in tool_messages[1]["content"] or "list" in tool_messages[1]["content"]
    assert "not offered" in tool_messages[2]["content"]
    assert "invalid arguments" in tool_messages[3]["content"]
    ids = [c["id"] for c in assistant["tool_calls"]]
    assert [m["tool_call_id"] for m in tool_messages] == ids


async def test_a_model_that_never_answers_exhausts_the_budget() -> None:
    config = LoopConfig(max_iterations=3)
    async with scripted_loop(tools=[echo_tool()], config=config) as (server, loop, context):
        server.push(*[Reply(tool_calls=[call(arguments={"text": str(i)})]) for i in range(3)])
        outcome = await loop.run(context, "loop forever")
    assert outcome.kind == "budget_exhausted"
    assert outcome.answer == ""
    assert outcome.iterations == 3
    assert len(outcome.tool_results) == 3
    assert "3 model calls" in outcome.error
    assert len(server.requests) == 3
    assert server.unscripted == 0


async def test_a_provider_timeout_ends_the_turn_with_an_error() -> None:
    fields = {"timeout_s": 0.2, "max_retries": 0}
    async with scripted_loop(provider_fields=fields) as (server, loop, context):
        server.push(Delay(seconds=3, then=Reply(text="too late")))
        with anyio.fail_after(2):
            outcome = await loop.run(context, "hurry")
    assert outcome.kind == "error"
    assert outcome.error_type == "ProviderTimeout"
    assert "0.2" in outcome.error
    assert outcome.iterations == 1


async def test_a_rate_limit_then_success_goes_through_the_provider_retries() -> None:
    async with scripted_loop() as (server, loop, context):
        server.push(HTTPError(status=429, retry_after=0), Reply(text="finally"))
        outcome = await loop.run(context, "again")
        assert isinstance(loop.llm, OpenAIProvider)
        stats = loop.llm.statistics()
    assert outcome.kind == "answer"
    assert outcome.answer == "finally"
    assert outcome.iterations == 1
    assert stats.retries == 1
    assert stats.errors.rate_limited == 1
    assert len(server.requests) == 2


async def test_a_rejected_request_ends_the_turn_with_an_error() -> None:
    async with scripted_loop() as (server, loop, context):
        server.push(HTTPError(status=400, message="bad request"))
        outcome = await loop.run(context, "x")
    assert (outcome.kind, outcome.error_type) == ("error", "RequestRejected")
    assert "bad request" in outcome.error


async def test_cancelling_the_turn_cancels_the_running_tools() -> None:
    started = anyio.Event()
    saw_cancel = anyio.Event()

    async def forever() -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            saw_cancel.set()
            raise
        raise AssertionError("unreachable")

    tool = FunctionTool(forever, name="forever", description="", parameters_schema=OBJECT)
    async with scripted_loop(tools=[tool]) as (server, loop, context):
        server.push(Reply(tool_calls=[call("forever"), call("forever")]), Reply(text="never"))
        turn = loop.turn(context, "go")
        outcomes: list[TurnOutcome] = []

        async def run() -> None:
            outcomes.append(await turn.run())

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await started.wait()
                turn.cancel()
    [outcome] = outcomes
    assert outcome.kind == "cancelled"
    assert outcome.iterations == 1
    assert saw_cancel.is_set()
    assert turn.outcome is outcome
    assert len(server.requests) == 1
    # The interrupted step is not recorded: only the goal is in the conversation.
    history = await context.history()
    assert [(i.kind, i.content) for i in history] == [("message", "go")]


async def test_cancelling_the_turn_cancels_the_model_call() -> None:
    asked = anyio.Event()

    def slow(request: RecordedRequest) -> Delay:
        asked.set()
        return Delay(seconds=10, then=Reply(text="too late"))

    async with scripted_loop() as (server, loop, context):
        server.push(slow)
        turn = loop.turn(context, "go")
        outcomes: list[TurnOutcome] = []

        async def run() -> None:
            outcomes.append(await turn.run())

        with anyio.fail_after(3):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await asked.wait()
                turn.cancel()
        assert isinstance(loop.llm, OpenAIProvider)
        stats = loop.llm.statistics()
    assert [o.kind for o in outcomes] == ["cancelled"]
    # The call was abandoned, not completed nor failed.
    assert (stats.calls, stats.succeeded, stats.failed) == (1, 0, 0)


async def test_a_turn_cancelled_before_it_runs_does_nothing() -> None:
    async with scripted_loop() as (server, loop, context):
        turn = loop.turn(context, "go")
        turn.cancel()
        outcome = await turn.run()
    assert (outcome.kind, outcome.iterations) == ("cancelled", 0)
    assert server.requests == []


async def test_cancellation_from_outside_propagates_and_cancels_the_tools() -> None:
    started = anyio.Event()
    saw_cancel = anyio.Event()

    async def forever() -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            saw_cancel.set()
            raise
        raise AssertionError("unreachable")

    tool = FunctionTool(forever, name="forever", description="", parameters_schema=OBJECT)
    async with scripted_loop(tools=[tool]) as (server, loop, context):
        server.push(Reply(tool_calls=[call("forever")]))
        turn = loop.turn(context, "go")
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(turn.run)
                await started.wait()
                tg.cancel_scope.cancel()
    assert saw_cancel.is_set()
    assert turn.outcome is None  # nothing was returned: the cancellation went on up


async def test_single_shot_answers_in_one_call_without_tools() -> None:
    config = LoopConfig(strategy="single_shot")
    async with scripted_loop(tools=[echo_tool()], config=config) as (server, loop, context):
        server.push(Reply(text="just this"))
        outcome = await loop.run(context, "q")
    assert (outcome.kind, outcome.answer, outcome.iterations) == ("answer", "just this", 1)
    [request] = server.requests
    assert "tools" not in request.body


async def test_chain_of_thought_separates_reasoning_and_answer() -> None:
    config = LoopConfig(strategy="chain_of_thought", system_prompt="Be careful.")
    text = "Six times seven.\nThat is 42.\nFinal answer: 42"
    async with scripted_loop(tools=[echo_tool()], config=config) as (server, loop, context):
        server.push(Reply(text=text))
        outcome = await loop.run(context, "6*7?")
    assert outcome.answer == "42"
    assert outcome.reasoning == "Six times seven.\nThat is 42."
    [request] = server.requests
    assert "tools" not in request.body
    system = request.messages[0]
    assert system["role"] == "system"
    assert system["content"].startswith("Be careful.")
    assert "Final answer:" in system["content"]
    # The whole reasoning stays in the conversation.
    assert (await context.history())[-1].content == text


async def test_chain_of_thought_without_the_marker_answers_with_everything() -> None:
    config = LoopConfig(strategy="chain_of_thought")
    async with scripted_loop(config=config) as (server, loop, context):
        server.push(Reply(text="  just 42  "))
        outcome = await loop.run(context, "6*7?")
    assert (outcome.answer, outcome.reasoning) == ("just 42", "")


async def test_partial_output_streams_as_updates() -> None:
    updates = Updates()
    async with scripted_loop(tools=[echo_tool()]) as (server, loop, context):
        server.push(
            Reply(text="Let me echo.", tool_calls=[call(arguments={"text": "x"})], chunk_size=3),
            Reply(text="All done here.", chunk_size=3),
        )
        outcome = await loop.run(context, "go", on_update=updates)
    assert all(r.stream for r in server.requests)
    chunks = updates.of(TextChunk)
    assert len(chunks) > 4  # really in pieces
    assert "".join(c.text for c in chunks if c.iteration == 1) == "Let me echo."
    assert "".join(c.text for c in chunks if c.iteration == 2) == "All done here."
    [started] = updates.of(ToolStarted)
    [finished] = updates.of(ToolFinished)
    assert (started.name, started.arguments, started.iteration) == ("echo", {"text": "x"}, 1)
    assert finished.result == outcome.tool_results[0]
    # In order: the first answer's text, the tool, then the second answer.
    kinds = [type(u).__name__ for u in updates.items]
    assert kinds.index("ToolStarted") > kinds.index("TextChunk")
    assert kinds.index("ToolFinished") < len(kinds) - 1
    assert outcome.answer == "All done here."


async def test_without_streaming_the_model_is_called_whole() -> None:
    updates = Updates()
    config = LoopConfig(stream=False)
    async with scripted_loop(config=config) as (server, loop, context):
        server.push(Reply(text="whole"))
        outcome = await loop.run(context, "go", on_update=updates)
    assert outcome.answer == "whole"
    assert not server.requests[0].stream
    # No text in pieces: only the call's report.
    assert [type(u) for u in updates.items] == [ModelCall]


async def test_big_tool_results_are_cut() -> None:
    async def big() -> str:
        return "x" * 5000

    tool = FunctionTool(big, name="big", description="", parameters_schema=OBJECT)
    config = LoopConfig(max_result_chars=1000)
    async with scripted_loop(tools=[tool], config=config) as (server, loop, context):
        server.push(Reply(tool_calls=[call("big")]), Reply(text="ok"))
        outcome = await loop.run(context, "go")
    content = outcome.tool_results[0].content
    assert content.startswith("x" * 1000)
    assert content.endswith("[... 4000 more characters cut]")


async def test_structured_results_go_to_the_model_as_json() -> None:
    async def data() -> dict[str, Any]:
        return {"rows": [1, 2], "ok": True}

    tool = FunctionTool(data, name="data", description="", parameters_schema=OBJECT)
    async with scripted_loop(tools=[tool]) as (server, loop, context):
        server.push(Reply(tool_calls=[call("data")]), Reply(text="ok"))
        outcome = await loop.run(context, "go")
    assert json.loads(outcome.tool_results[0].content) == {"rows": [1, 2], "ok": True}


async def test_repeated_call_ids_are_made_unique() -> None:
    async with scripted_loop(tools=[echo_tool()]) as (server, loop, context):
        server.push(
            Reply(
                tool_calls=[
                    ScriptedToolCall(name="echo", arguments={"text": "a"}, id="same"),
                    ScriptedToolCall(name="echo", arguments={"text": "b"}, id="same"),
                ]
            ),
            Reply(text="ok"),
        )
        outcome = await loop.run(context, "go")
    first, second = outcome.tool_results
    assert first.call_id == "same"
    assert second.call_id != "same"
    tool_messages = [m for m in server.requests[1].messages if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["echo: a", "echo: b"]


async def test_a_turn_runs_once() -> None:
    async with scripted_loop() as (server, loop, context):
        server.push(Reply(text="one"))
        turn = loop.turn(context, "go")
        await turn.run()
        with pytest.raises(InvalidArgument, match="runs once"):
            await turn.run()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_iterations": 0}, "max_iterations"),
        ({"max_parallel_tools": 0}, "max_parallel_tools"),
        ({"context_budget_tokens": 0}, "context_budget_tokens"),
        ({"strategy": "guess"}, "unknown strategy"),
        ({"tool_calling": "smoke"}, "unknown tool_calling"),
        ({"tool_timeout_s": 0}, "tool_timeout_s"),
        ({"llm_timeout_s": -1.0}, "llm_timeout_s"),
        ({"max_result_chars": 10}, "max_result_chars"),
    ],
)
def test_bad_configuration_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        LoopConfig(**fields)


async def test_a_prompt_budget_too_small_is_an_error_outcome() -> None:
    config = LoopConfig(context_budget_tokens=5, system_prompt="a long system prompt " * 10)
    async with scripted_loop(config=config) as (server, loop, context):
        outcome = await loop.run(context, "go")
    assert (outcome.kind, outcome.error_type) == ("error", "BudgetTooSmall")
    assert server.requests == []


async def test_the_loop_takes_any_llm() -> None:
    # The router is an LLM too; the loop only needs the protocol.
    async with ScriptedLLMServer([Reply(text="routed")]) as server:
        provider = OpenAIProvider("p", provider_config(server))
        async with ModelRouter({"p": provider}, owns_providers=True) as router:
            loop = Loop(router)
            context = AgentContext(InMemoryStore(), agent_id="a", thread_id="t")
            outcome = await loop.run(context, "go")
    assert outcome.answer == "routed"


async def test_each_model_call_is_reported_with_its_tokens_and_duration() -> None:
    updates = Updates()
    async with scripted_loop(tools=[echo_tool()]) as (server, loop, context):
        server.push(
            Reply(
                text="Let me echo.",
                tool_calls=[call(arguments={"text": "x"})],
                prompt_tokens=31,
                completion_tokens=7,
            ),
            Reply(text="Done.", prompt_tokens=45, completion_tokens=3),
        )
        outcome = await loop.run(context, "go", on_update=updates)
    calls = updates.of(ModelCall)
    assert [(c.iteration, c.prompt_tokens, c.completion_tokens) for c in calls] == [
        (1, 31, 7),
        (2, 45, 3),
    ]
    assert all(c.duration_s > 0 and c.finish_reason for c in calls)
    assert calls[0].finish_reason == "tool_calls"
    # The first call's report comes before its tool runs; the turn's usage is their sum.
    kinds = [type(u).__name__ for u in updates.items]
    assert kinds.index("ModelCall") < kinds.index("ToolStarted")
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens) == (76, 10)
