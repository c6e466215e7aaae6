"""The text-format fallback for models without tool calling, and its parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loom.runtime.cognition import LoopConfig, parse_text_step, split_final_answer
from loom.runtime.llm import MalformedToolArguments, UnknownTool
from loom.runtime.testing import Reply

from ._loop_support import echo_tool, scripted_loop

NAMES = {"echo", "fs.read"}


# ---------------------------------------------------------------------- through the loop


@pytest.mark.anyio
async def test_a_model_without_tool_calling_gets_the_text_format() -> None:
    fields = {"supports_tools": False}
    async with scripted_loop(tools=[echo_tool()], provider_fields=fields) as (s, loop, ctx):
        s.push(
            Reply(
                text=(
                    "I should echo.\n"
                    "Action: echo\n"
                    'Action Input: {"text": "hi"}\n'
                    "Observation: echo: made up by the model\n"
                    "Final answer: premature"
                )
            ),
            Reply(text="Thought: got it.\nFinal Answer: it said echo: hi"),
        )
        outcome = await loop.run(ctx, "echo hi")
    assert outcome.kind == "answer"
    assert outcome.answer == "it said echo: hi"
    [result] = outcome.tool_results
    assert (result.name, result.content, result.is_error) == ("echo", "echo: hi", False)
    first, second = s.requests
    assert "tools" not in first.body
    system = first.messages[0]["content"]
    assert "Action Input:" in system
    assert "- echo: Echo the text." in system
    # History is plain text: the model's own answer, then the real observation.
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "user"]
    assert "tool_calls" not in second.messages[2]
    assert second.messages[3]["content"] == "Observation (echo, result): echo: hi"


@pytest.mark.anyio
async def test_malformed_text_is_fed_back_and_the_loop_goes_on() -> None:
    config = LoopConfig(tool_calling="text")
    async with scripted_loop(tools=[echo_tool()], config=config) as (s, loop, ctx):
        s.push(
            Reply(text="Action: echo\nAction Input: {text: hi}"),
            Reply(text="Action: shout\nAction Input: {}"),
            Reply(text='Action: echo\nAction Input: ```json\n{"text": "fenced"}\n```'),
            Reply(text="The answer, without the format."),
        )
        outcome = await loop.run(ctx, "echo hi")
    assert outcome.kind == "answer"
    assert outcome.answer == "The answer, without the format."
    kinds = [(r.error_type, r.is_error) for r in outcome.tool_results]
    assert kinds == [("MalformedToolArguments", True), ("UnknownTool", True), ("", False)]
    assert outcome.tool_results[2].content == "echo: fenced"
    observations = [m["content"] for m in s.requests[3].messages if m["role"] == "user"]
    assert "not valid JSON" in observations[1]
    assert "there is no tool 'shout'" in observations[2]
    assert observations[3] == "Observation (echo, result): echo: fenced"


@pytest.mark.anyio
async def test_native_tool_calling_is_the_default() -> None:
    async with scripted_loop(tools=[echo_tool()]) as (s, loop, ctx):
        s.push(Reply(text="no tools needed"))
        await loop.run(ctx, "hi")
    assert [t["function"]["name"] for t in s.requests[0].tools] == ["echo"]
    assert "Action Input:" not in str(s.requests[0].messages)


# ---------------------------------------------------------------------- the parser


def test_several_actions_are_parallel_calls() -> None:
    text = (
        "Thought: two things.\n"
        'Action: echo\nAction Input: {"text": "a"}\n\n'
        '**Action:** `fs.read`\n**Action Input:** {"path": "x"} because I need it\n'
    )
    step = parse_text_step(text, NAMES, call_prefix="c")
    assert [(c.id, c.name, dict(c.arguments)) for c in step.calls] == [
        ("c0", "echo", {"text": "a"}),
        ("c1", "fs.read", {"path": "x"}),
    ]
    assert all(c.error is None for c in step.calls)


def test_an_action_without_input_has_no_arguments() -> None:
    [c] = parse_text_step("Action: echo", NAMES, call_prefix="c").calls
    assert (c.error, dict(c.arguments)) == (None, {})


def test_a_final_answer_before_any_action_wins_and_keeps_all_its_lines() -> None:
    step = parse_text_step("Final answer: 7\nAction: echo is a word", NAMES, call_prefix="c")
    assert (step.calls, step.answer) == ((), "7\nAction: echo is a word")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Action: echo\nAction Input: [1, 2]", MalformedToolArguments),
        ("Action: echo\nAction Input: not json at all", MalformedToolArguments),
        ('Action: echo\nAction Input: {"text": ', MalformedToolArguments),
        ("Action: nothing\nAction Input: {}", UnknownTool),
        ("Action:\nAction Input: {}", UnknownTool),
    ],
)
def test_bad_actions_carry_their_error(text: str, error: type[Exception]) -> None:
    [c] = parse_text_step(text, NAMES, call_prefix="c").calls
    assert isinstance(c.error, error)
    assert c.error.call_id == "c0"


def test_split_final_answer_takes_the_last_marker() -> None:
    assert split_final_answer("a\nFinal answer: b\nmore\nFINAL ANSWER: c") == (
        "a\nFinal answer: b\nmore",
        "c",
    )


@given(st.text(max_size=300))
def test_the_parser_never_raises(text: str) -> None:
    step = parse_text_step(text, NAMES, call_prefix="c")
    assert bool(step.calls) or isinstance(step.answer, str)
    for c in step.calls:
        assert c.error is not None or c.name in NAMES
