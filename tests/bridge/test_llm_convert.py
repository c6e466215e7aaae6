"""``bridge/_llm_convert.py``: every ``loom.runtime.llm`` type through its ``loom.v1.LLM``
message and back, equal (errors: the same class, text and fields)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loom.bridge import WireError
from loom.bridge._generated import llm_pb2
from loom.bridge._llm_convert import (
    chunk_from_proto,
    chunk_to_proto,
    failure_code,
    failure_from_proto,
    failure_to_proto,
    request_from_proto,
    request_to_proto,
)
from loom.runtime import InvalidArgument
from loom.runtime.llm import (
    AssistantMessage,
    BadResponse,
    Completion,
    CompletionRequest,
    LLMError,
    MalformedToolArguments,
    Message,
    NoModelConfigured,
    NoProviderAvailable,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
    RouteDecision,
    StreamEnd,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallReady,
    ToolMessage,
    ToolSpec,
    UnknownModel,
    UnknownTool,
    Usage,
    UserMessage,
)

GOOD = ToolCall(id="c1", name="fs.read", arguments={"path": "a", "n": [1, 2.5, None]})
MALFORMED = ToolCall(
    id="c2",
    name="fs.read",
    raw_arguments="{nope",
    error=MalformedToolArguments(
        "fs.read: arguments are not JSON", call_id="c2", tool_name="fs.read", raw_arguments="{nope"
    ),
)
UNKNOWN = ToolCall(
    id="c3",
    name="rm_rf",
    raw_arguments="{}",
    error=UnknownTool("no tool 'rm_rf' was offered", call_id="c3", tool_name="rm_rf"),
)


def _same_call(a: ToolCall, b: ToolCall) -> None:
    assert (a.id, a.name, dict(a.arguments), a.raw_arguments) == (
        b.id,
        b.name,
        dict(b.arguments),
        b.raw_arguments,
    )
    assert type(a.error) is type(b.error)
    if a.error is not None and b.error is not None:
        assert str(a.error) == str(b.error)
        assert (a.error.call_id, a.error.tool_name) == (b.error.call_id, b.error.tool_name)
        assert getattr(a.error, "raw_arguments", None) == getattr(b.error, "raw_arguments", None)


def _same_messages(a: tuple[Message, ...], b: tuple[Message, ...]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y)
        if isinstance(x, AssistantMessage) and isinstance(y, AssistantMessage):
            assert x.content == y.content
            for c, d in zip(x.tool_calls, y.tool_calls, strict=True):
                _same_call(c, d)
        else:
            assert x == y


def test_a_full_request_round_trips() -> None:
    request = CompletionRequest(
        messages=(
            SystemMessage(content="be terse"),
            UserMessage(content="read a"),
            AssistantMessage(content="", tool_calls=(GOOD, MALFORMED, UNKNOWN)),
            ToolMessage(tool_call_id="c1", content="A", name="fs.read"),
            ToolMessage(tool_call_id="c2", content="bad", is_error=True),
        ),
        tools=(
            ToolSpec(name="fs.read", description="read", parameters_schema={"type": "object"}),
            ToolSpec(name="clock.now"),
        ),
        tool_choice="required",
        temperature=0.0,
        max_tokens=12,
        timeout_s=3.5,
        local_only=True,
        latency_budget_s=2.0,
        max_cost_usd=0.01,
    )
    msg = request_to_proto(request, model="local")
    assert msg.model == "local"
    assert msg.stream
    back = request_from_proto(llm_pb2.CompleteRequest.FromString(msg.SerializeToString()))
    _same_messages(back.messages, request.messages)
    assert back.tools == request.tools
    rest = [
        "tool_choice",
        "temperature",
        "max_tokens",
        "timeout_s",
        "local_only",
        "latency_budget_s",
        "max_cost_usd",
    ]
    assert [getattr(back, f) for f in rest] == [getattr(request, f) for f in rest]


@given(
    texts=st.lists(st.text(), min_size=1, max_size=5),
    temperature=st.none() | st.floats(0, 2),
    max_tokens=st.none() | st.integers(1, 2**31),
)
def test_any_plain_request_round_trips(
    texts: list[str], temperature: float | None, max_tokens: int | None
) -> None:
    request = CompletionRequest(
        messages=tuple(UserMessage(content=t) for t in texts),
        temperature=temperature,
        max_tokens=max_tokens,
    )
    assert request_from_proto(request_to_proto(request)) == request


def test_unset_optionals_stay_unset() -> None:
    back = request_from_proto(
        request_to_proto(CompletionRequest(messages=(UserMessage(content="x"),)))
    )
    assert (back.temperature, back.max_tokens, back.timeout_s) == (None, None, None)


@pytest.mark.parametrize(
    ("msg", "error"),
    [
        (llm_pb2.CompleteRequest(), InvalidArgument),
        (llm_pb2.CompleteRequest(messages=[llm_pb2.LLMMessage()]), WireError),
        (
            llm_pb2.CompleteRequest(
                messages=[llm_pb2.LLMMessage(user=llm_pb2.UserMessage(content="x"))],
                tools=[llm_pb2.LLMTool(name="t", parameters_schema="[1]")],
            ),
            WireError,
        ),
        (
            llm_pb2.CompleteRequest(
                messages=[llm_pb2.LLMMessage(user=llm_pb2.UserMessage(content="x"))],
                temperature=float("nan"),
            ),
            WireError,
        ),
    ],
)
def test_malformed_requests_are_refused(
    msg: llm_pb2.CompleteRequest, error: type[Exception]
) -> None:
    with pytest.raises(error):
        request_from_proto(msg)


def test_every_chunk_round_trips() -> None:
    completion = Completion(
        text="hi",
        tool_calls=(GOOD, MALFORMED),
        finish_reason="length",
        usage=Usage(prompt_tokens=3, completion_tokens=4),
        model="m",
        provider="p",
        latency_s=0.5,
    )
    assert chunk_from_proto(chunk_to_proto(TextDelta(text="he"))) == TextDelta(text="he")
    ready = chunk_from_proto(chunk_to_proto(ToolCallReady(call=UNKNOWN)))
    assert isinstance(ready, ToolCallReady)
    _same_call(ready.call, UNKNOWN)
    end = chunk_from_proto(chunk_to_proto(StreamEnd(completion=completion)))
    assert isinstance(end, StreamEnd)
    got = end.completion
    fields = ("text", "finish_reason", "usage", "model", "provider", "latency_s")
    assert [getattr(got, f) for f in fields] == [getattr(completion, f) for f in fields]
    for a, b in zip(got.tool_calls, completion.tool_calls, strict=True):
        _same_call(a, b)
    with pytest.raises(WireError):
        chunk_from_proto(llm_pb2.CompleteResponse())


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (RateLimited("429: slow", provider="p", retry_after=2.5), "RESOURCE_EXHAUSTED"),
        (RateLimited("429: slow", provider="p"), "RESOURCE_EXHAUSTED"),
        (ProviderTimeout("no answer in 3 s", provider="p"), "DEADLINE_EXCEEDED"),
        (ProviderUnavailable("refused", provider="p"), "UNAVAILABLE"),
        (ProviderUnavailable("503", provider="p", status=503), "UNAVAILABLE"),
        (RequestRejected("context length", provider="p", status=400), "INVALID_ARGUMENT"),
        (BadResponse("no choices", provider="p"), "INTERNAL"),
        (UnknownModel("x", ("a", "b")), "NOT_FOUND"),
        (NoModelConfigured("no [llm]"), "FAILED_PRECONDITION"),
        (NoProviderAvailable("none", decision=RouteDecision(operation="complete")), "UNAVAILABLE"),
        (LLMError("odd", provider="p"), "UNKNOWN"),
    ],
)
def test_every_llm_error_round_trips(error: LLMError, code: str) -> None:
    msg = failure_to_proto(error)
    assert failure_code(msg).name == code
    back = failure_from_proto(llm_pb2.LLMFailure.FromString(msg.SerializeToString()))
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert back.provider == error.provider
    for field in ("retry_after", "status"):
        assert getattr(back, field, None) == getattr(error, field, None)


def test_a_cause_travels_along() -> None:
    cause = RateLimited("429", provider="p", retry_after=1.0)
    error = NoProviderAvailable("p failed", decision=RouteDecision(operation="stream"))
    error.__cause__ = cause
    back = failure_from_proto(failure_to_proto(error))
    assert isinstance(back.__cause__, RateLimited)
    assert back.__cause__.retry_after == 1.0
