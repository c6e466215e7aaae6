"""The heuristic token counter against exact counts of real tokenizers."""

from __future__ import annotations

import pytest

from loom.runtime.llm import AssistantMessage, ToolCall, ToolMessage, UserMessage
from loom.runtime.memory import (
    MESSAGE_OVERHEAD_TOKENS,
    HeuristicTokenCounter,
    TokenCounter,
    message_tokens,
)

from ._token_samples import LATIN_ONLY, SAMPLES

COUNTER = HeuristicTokenCounter()


def test_is_a_token_counter() -> None:
    assert isinstance(COUNTER, TokenCounter)


@pytest.mark.parametrize("name", LATIN_ONLY)
def test_latin_text_code_and_json_within_15_percent(name: str) -> None:
    text, cl100k, _ = SAMPLES[name]
    assert abs(COUNTER.count(text) / cl100k - 1) <= 0.15


@pytest.mark.parametrize("name", sorted(set(SAMPLES) - set(LATIN_ONLY)))
def test_other_languages_within_half(name: str) -> None:
    text, cl100k, _ = SAMPLES[name]
    assert abs(COUNTER.count(text) / cl100k - 1) <= 0.5


def test_total_error_is_small_and_never_far_under_o200k() -> None:
    estimate = sum(COUNTER.count(t) for t, _, _ in SAMPLES.values())
    cl100k = sum(c for _, c, _ in SAMPLES.values())
    o200k = sum(o for _, _, o in SAMPLES.values())
    assert abs(estimate / cl100k - 1) <= 0.10
    # The newer vocabulary needs fewer tokens: the estimate errs on the safe (high) side.
    assert estimate >= o200k


def test_scripts_are_weighed_differently() -> None:
    # A CJK character is about a token; a Latin letter about a quarter of one.
    assert COUNTER.count("我" * 100) >= 90
    assert COUNTER.count("a" * 100) <= 40
    assert COUNTER.count("12345678901") == 5  # four groups of digits, 1.25 each


def test_edges() -> None:
    assert COUNTER.count("") == 0
    assert COUNTER.count(" ") == 1  # anything non-empty is at least one token
    assert COUNTER.count("\x00\ud800") >= 1  # control and lone surrogate: no error


def test_message_tokens_add_the_overhead_and_the_calls() -> None:
    plain = UserMessage(content="hello there")
    assert message_tokens(plain, COUNTER) == MESSAGE_OVERHEAD_TOKENS + COUNTER.count("hello there")
    call = ToolCall(id="c", name="fs.read", arguments={"path": "a"})
    with_call = AssistantMessage(content="hello there", tool_calls=(call,))
    assert message_tokens(with_call, COUNTER) > message_tokens(plain, COUNTER) + COUNTER.count(
        '{"path": "a"}'
    )
    # The text the model wrote is what is counted, when the call carries it.
    raw = ToolCall(id="c", name="fs.read", arguments={"path": "a"}, raw_arguments='{"path":"a"}')
    assert message_tokens(AssistantMessage(tool_calls=(raw,)), COUNTER) - COUNTER.count(
        '{"path":"a"}'
    ) == message_tokens(AssistantMessage(tool_calls=(call,)), COUNTER) - COUNTER.count(
        '{"path": "a"}'
    )
    result = ToolMessage(tool_call_id="c", content="hello there", name="fs.read")
    assert (
        message_tokens(result, COUNTER)
        == message_tokens(plain, COUNTER) + COUNTER.count("fs.read") + 2
    )
