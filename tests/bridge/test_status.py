"""The LoomError <-> gRPC status mapping (``bridge/_status.py``), both ways, for every class.

Every ``LoomError`` subclass in ``loom`` is found by walking its modules and must be filed in
exactly one table below, so a new error class fails here until someone decides how (or
whether) it crosses the wire.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable

import grpc
import pytest

import loom
from loom import (
    A2AAuthFailed,
    A2ABadCard,
    A2AError,
    A2ATaskFailed,
    A2AUnreachable,
    InvalidCapability,
)
from loom.bridge import (
    AgentReleased,
    AgentUnresponsive,
    BindError,
    BridgeError,
    ClientClosed,
    ConnectFailed,
    ConnectionEnded,
    ConnectionLost,
    DurablePublishFailed,
    HandshakeError,
    InsecureBind,
    LimitExceeded,
    NotRegistered,
    OutsideNamespace,
    PublishRejected,
    RegistrationRefused,
    StatusError,
    SubscribeRefused,
    Unauthenticated,
    WeakToken,
    WireError,
    WrongAgent,
    error_from_outcome,
    error_from_status,
)
from loom.bridge._convert import tool_result_from_proto, tool_result_to_proto
from loom.bridge._handlers import MalformedRequest
from loom.bridge._llm_convert import _KINDS as _LLM_KINDS
from loom.bridge._status import _WIRE, code_name, outcome_from_error, status_of
from loom.cli._agent_host import LoadError
from loom.cli._commands import UsageError
from loom.cli._runner import RunError
from loom.cluster import (
    JetStreamUnavailable,
    NatsConnectFailed,
    NatsError,
    NatsServerFailed,
    NatsServerNotFound,
)
from loom.runtime import (
    AgentExists,
    AgentNotFound,
    AgentStartFailed,
    ApprovalAlreadyDecided,
    ApprovalNotFound,
    BarrierAborted,
    BarrierMismatch,
    BudgetExhausted,
    BudgetUnavailable,
    BusClosed,
    ConfigError,
    DeadlineExceeded,
    DurabilityUnavailable,
    DurableUnavailable,
    InvalidArgument,
    InvalidTopic,
    LoomError,
    NoResponders,
    NotAQuestion,
    QuestionAlreadyAnswered,
    RequestTimeout,
    SubscriptionClosed,
    TTLExpired,
    TurnNotCancellable,
    WouldBlock,
)
from loom.runtime.llm import (
    BadToolCall,
    CacheStoreError,
    LLMConfigError,
    LLMError,
    MalformedToolArguments,
    UnknownTool,
)
from loom.runtime.memory import (
    BudgetTooSmall,
    ContextError,
    DuplicateItem,
    InvalidItem,
    SchemaVersionError,
    StoreClosed,
    StoreOpenError,
)
from loom.runtime.resilience import CircuitOpen, PolicyConfigError, PolicyError
from loom.runtime.tools import (
    CallDepthExceeded,
    EffectInterrupted,
    InvalidToolArguments,
    InvalidToolSchema,
    McpConfigError,
    ScopeUnavailable,
    ToolCallRefused,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolPermissionDenied,
    ToolTimeout,
    ToolUnavailable,
)
from loom.web import HttpBindError, WebError

# ---------------------------------------------------------------- the tables

# One per status code: the server sends the code, a client rebuilds the class (the module's
# own table, so the test cannot drift from it).
WIRE: dict[type[LoomError], grpc.StatusCode] = dict(_WIRE)

# Sent as a status by the server, rebuilt as the wire class they are filed under (the status
# has no room for the subclass).
ARRIVES_AS: dict[type[LoomError], type[LoomError]] = {
    InvalidTopic: InvalidArgument,  # a bad pattern in RegisterAgent, subscribe, ListAgents
    WireError: InvalidArgument,  # a malformed frame or field
    HandshakeError: InvalidArgument,  # an EventStream that did not open with its ack
    MalformedRequest: InvalidArgument,  # request bytes that do not decode (bridge/_handlers.py)
    OutsideNamespace: WrongAgent,  # a tenant reaching outside its namespace (PERMISSION_DENIED)
}

# Sent in a ToolResult (outcome_from_error) and rebuilt as themselves (error_from_outcome).
TOOL_ERRORS: tuple[type[ToolError], ...] = (
    ToolNotFound,
    InvalidToolArguments,
    ToolTimeout,
    ToolPermissionDenied,
    ToolFailed,
    AgentUnresponsive,  # a call pushed to an agent that turned stale (code AGENT_UNRESPONSIVE)
    ToolCallRefused,  # a cap of the turn the call was made for (details: budget, limit)
    CallDepthExceeded,  # a chain of agent calls past max_call_depth (details: depth too)
    ScopeUnavailable,  # the authority over the turn's call scope unreachable (details: why)
)

# Sent in a ToolResult as TOOL_ERROR with their class name as the code: rebuilt as ToolFailed.
TOOL_ERRORS_AS_FAILED: tuple[type[ToolError], ...] = (
    ToolError,  # a tool that raises the base class itself
    ToolUnavailable,  # an MCP tool of the server's whose MCP server is down
    EffectInterrupted,  # the effect journal refusing a call a crash interrupted
    A2AUnreachable,  # a remote A2A agent's server not answering (a ToolUnavailable)
    A2ABadCard,  # a remote A2A agent's card unusable (a ToolUnavailable)
    A2ATaskFailed,  # a remote A2A task ending failed (a ToolFailed named for its class)
)

# Sent in a ToolResult under their base class's code (the result has no room for the
# subclass), rebuilt as that base class.
TOOL_ERRORS_AS_BASE: dict[type[ToolError], type[ToolError]] = {
    A2AAuthFailed: ToolPermissionDenied,  # a remote A2A agent refusing our credentials
}

# Sent by loom.v1.LLM in an LLMFailure frame (its kind says the class) before the status, and
# rebuilt as themselves (bridge/_llm_convert.py; round trips in test_llm_convert.py).
LLM_FAILURES: set[type[LoomError]] = {cls for cls, _kind, _code in _LLM_KINDS} | {LLMError}

# Never sent by the server, with the reason.
NEVER_CROSSES: dict[type[LoomError], str] = {
    LoomError: "the root; the server reports only the classes above",
    A2AError: "a base class; its subclasses are filed one by one",
    PolicyError: "a base class; its subclasses are filed one by one",
    CircuitOpen: "refused where the policy is: a tool call's is ToolFailed (cause_type "
    "CircuitOpen), a provider's ProviderUnavailable, a request's raised to its caller in process",
    PolicyConfigError: "configuration is read before the server starts",
    BudgetExhausted: "refused inside a turn, which ends with outcome budget_exhausted",
    BudgetUnavailable: "made by a remote agent's client when the server's ledger is silent",
    TurnNotCancellable: "raised in loom serve's A2A tasks/cancel, answered there as a "
    "JSON-RPC TaskNotCancelableError",
    BridgeError: "a base class; its subclasses are filed one by one",
    InsecureBind: "raised by BridgeServer(...) before anything listens",
    WeakToken: "raised by BridgeServer(...) before anything listens",
    BindError: "raised when the server cannot listen, to whoever started it",
    StatusError: "made by a client from a code no class stands for",
    ClientClosed: "the client's own state",
    ConnectionLost: "the client's session noticing its stream ended",
    ConnectFailed: "made by a client from a failed first contact",
    ConnectionEnded: "made by a client from the status that ended it for good once connected",
    AgentReleased: "made by a client from a stream ended with loom-agent-released",
    RegistrationRefused: "made by a client from RegisterAgent's success = false",
    SubscribeRefused: "made by a client from a SubscribeResult's code",
    PublishRejected: "made by a client from a PublishRejection's code",
    DurablePublishFailed: "made by a client from a durable publish's PublishRejection",
    SubscriptionClosed: "a local subscription; the server ends a subscribe with UNAVAILABLE",
    WouldBlock: "the server waits for room instead of refusing (its publishers block)",
    TTLExpired: "the bus drops an expired event, counted; nothing is answered",
    DurableUnavailable: "a publish the server's log did not store is a PublishRejection",
    AgentNotFound: "a local lookup; a tool call to a gone agent is a ToolNotFound result",
    AgentStartFailed: "raised in the process that starts the agent",
    ConfigError: "configuration is read before the server starts",
    NatsError: "a base class; its subclasses are filed one by one",
    NatsServerNotFound: "raised when loom serve starts, before anything listens",
    NatsServerFailed: "raised when loom serve starts, before anything listens",
    NatsConnectFailed: "raised when loom serve starts, before anything listens",
    JetStreamUnavailable: "raised when loom serve starts, before anything listens",
    WebError: "a base class; its subclasses are filed one by one",
    HttpBindError: "raised when loom serve starts, before anything listens",
    McpConfigError: "configuration is read before the server starts",
    LLMConfigError: "configuration is read before the server starts",
    CacheStoreError: "the response cache opens before the server starts; later, logged",
    InvalidToolSchema: "raised when a tool is registered, not when it is called",
    RequestTimeout: "collab requests travel as events; the requester's own deadline",
    NoResponders: "collab: decided by the requester's runtime",
    BarrierMismatch: "collab: raised to the local caller",
    BarrierAborted: "collab: raised to the local caller",
    BadToolCall: "attached to a ToolCall, never raised",
    MalformedToolArguments: "attached to a ToolCall, never raised",
    UnknownTool: "attached to a ToolCall, never raised",
    ContextError: "conversation memory is local to a process",
    InvalidItem: "conversation memory is local to a process",
    DuplicateItem: "conversation memory is local to a process",
    StoreClosed: "conversation memory is local to a process",
    StoreOpenError: "conversation memory is local to a process",
    SchemaVersionError: "conversation memory is local to a process",
    BudgetTooSmall: "conversation memory is local to a process",
    InvalidCapability: "raised where the @capability is declared",
    UsageError: "the CLI's own command line",
    LoadError: "the CLI loading an agent's module",
    RunError: "the CLI's process supervisor",
    ApprovalNotFound: "loom.v1.Approvals answers NOT_FOUND itself (bridge/_approvals_service.py)",
    ApprovalAlreadyDecided: "loom.v1.Approvals answers FAILED_PRECONDITION itself",
    QuestionAlreadyAnswered: "loom.v1.Approvals answers FAILED_PRECONDITION itself",
    NotAQuestion: "loom.v1.Approvals answers INVALID_ARGUMENT itself",
}

# How to make an instance of a class whose constructor wants more than a message.
SAMPLES: dict[type[LoomError], Callable[[], LoomError]] = {
    InvalidTopic: lambda: InvalidTopic("a..b", "empty segment"),
    AgentExists: lambda: AgentExists("a1", "a local agent runs under that id"),
    WireError: lambda: WireError("Event.metadata['ttl']", "not an integer"),
    MalformedRequest: lambda: MalformedRequest("loom.v1.PublishRequest", "truncated"),
    NotRegistered: lambda: NotRegistered("a1"),
    LimitExceeded: lambda: LimitExceeded("max_agents", 3, "3 agents are connected"),
    ToolError: lambda: ToolError("plain: failure", tool="t.x"),
    ToolNotFound: lambda: ToolNotFound("t.x"),
    InvalidToolArguments: lambda: InvalidToolArguments(
        "'x' is a required property", path=("items", 0, "a/b~c"), tool="t.x"
    ),
    ToolTimeout: lambda: ToolTimeout(2.5, tool="t.x"),
    ToolPermissionDenied: lambda: ToolPermissionDenied("/etc is outside the workspace", tool="t.x"),
    ToolFailed: lambda: ToolFailed("ValueError", "bad value: 3", tool="t.x"),
    ToolUnavailable: lambda: ToolUnavailable("fs", "not connected", tool="t.x"),
    AgentUnresponsive: lambda: AgentUnresponsive("a1", 15.0, tool="t.x"),
    EffectInterrupted: lambda: EffectInterrupted("a/t/e/c1", tool="t.x"),
    ToolCallRefused: lambda: ToolCallRefused("max_tool_calls", 3, tool="t.x"),
    CallDepthExceeded: lambda: CallDepthExceeded(4, 3, tool="t.x"),
    ScopeUnavailable: lambda: ScopeUnavailable("no answer within 10 s", tool="t.x"),
    A2AUnreachable: lambda: A2AUnreachable("http://a.example", "connection refused", tool="t.x"),
    A2ABadCard: lambda: A2ABadCard("http://a.example", "not JSON", tool="t.x"),
    A2AAuthFailed: lambda: A2AAuthFailed("http://a.example", "HTTP 401", tool="t.x"),
    A2ATaskFailed: lambda: A2ATaskFailed("http://a.example", "failed", "boom", tool="t.x"),
}


def sample(kind: type[LoomError]) -> LoomError:
    make = SAMPLES.get(kind)
    return make() if make is not None else kind(f"{kind.__name__}: something: went wrong")


def every_loom_error() -> set[type[LoomError]]:
    for info in pkgutil.walk_packages(loom.__path__, prefix="loom."):
        if "._generated" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found: set[type[LoomError]] = {LoomError}
    todo = [LoomError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found and sub.__module__.split(".")[0] == "loom":
                found.add(sub)
                todo.append(sub)
    return found


# ---------------------------------------------------------------- every class is filed


def test_every_loom_error_is_filed_once() -> None:
    tables: list[set[type[LoomError]]] = [
        set(WIRE),
        set(ARRIVES_AS),
        set(TOOL_ERRORS),
        set(TOOL_ERRORS_AS_FAILED),
        set(TOOL_ERRORS_AS_BASE),
        LLM_FAILURES,
        set(NEVER_CROSSES),
    ]
    filed = set().union(*tables)
    assert sum(len(t) for t in tables) == len(filed), "a class is filed twice"
    missing = every_loom_error() - filed
    assert not missing, f"not filed (decide how each crosses the wire): {sorted(map(str, missing))}"
    assert not filed - every_loom_error()


def test_one_class_per_code() -> None:
    codes = list(WIRE.values())
    assert len(set(codes)) == len(codes)
    for kind, code in WIRE.items():
        assert type(error_from_status(code, "x")) is kind


# ---------------------------------------------------------------- statuses


@pytest.mark.parametrize("kind", list(WIRE), ids=lambda k: k.__name__)
def test_wire_class_round_trip(kind: type[LoomError]) -> None:
    exc = sample(kind)
    code = status_of(exc)
    assert code is WIRE[kind]
    for sent in (code, code_name(code)):  # a call's status; an err frame's or rejection's code
        back = error_from_status(sent, str(exc))
        assert type(back) is kind
        assert str(back) == str(exc)


@pytest.mark.parametrize("kind", list(ARRIVES_AS), ids=lambda k: k.__name__)
def test_a_subclass_arrives_as_its_wire_class(kind: type[LoomError]) -> None:
    exc = sample(kind)
    base = ARRIVES_AS[kind]
    assert isinstance(exc, base)  # so `except base` catches it on both sides
    back = error_from_status(status_of(exc), str(exc))
    assert type(back) is base
    assert str(back) == str(exc)


def test_fields_the_status_cannot_carry_are_empty() -> None:
    back = error_from_status(grpc.StatusCode.ALREADY_EXISTS, "agent 'a1' already exists: x")
    assert isinstance(back, AgentExists)
    assert back.agent_id == ""
    limit = error_from_status("RESOURCE_EXHAUSTED", "3 agents (limit max_agents = 3)")
    assert isinstance(limit, LimitExceeded)
    assert (limit.limit, limit.value) == ("", 0)


@pytest.mark.parametrize(
    "code", [c for c in grpc.StatusCode if c not in WIRE.values() and c is not grpc.StatusCode.OK]
)
def test_any_other_code_is_a_status_error(code: grpc.StatusCode) -> None:
    back = error_from_status(code, "details")
    assert type(back) is StatusError
    assert (back.code, back.details) == (code.name, "details")


def test_unexpected_errors_are_internal() -> None:
    assert status_of(RuntimeError("boom")) is grpc.StatusCode.INTERNAL
    assert status_of(LoomError("unfiled")) is grpc.StatusCode.UNKNOWN


# ---------------------------------------------------------------- tool results


def _through_the_wire(exc: ToolError) -> ToolError:
    outcome = tool_result_from_proto(tool_result_to_proto(outcome_from_error("c1", exc)))
    return error_from_outcome(outcome, tool="t.x", timeout=math.inf)


@pytest.mark.parametrize("kind", TOOL_ERRORS, ids=lambda k: k.__name__)
def test_tool_error_round_trip(kind: type[ToolError]) -> None:
    exc = sample(kind)
    assert isinstance(exc, ToolError)
    back = _through_the_wire(exc)
    assert type(back) is kind
    assert str(back) == str(exc)
    assert back.tool == exc.tool
    # And again: a failure relayed over several hops reads the same at the end.
    assert str(_through_the_wire(back)) == str(exc)


def test_tool_error_fields_survive() -> None:
    invalid = _through_the_wire(SAMPLES[InvalidToolArguments]())  # type: ignore[arg-type]
    assert isinstance(invalid, InvalidToolArguments)
    assert invalid.path == ("items", 0, "a/b~c")
    assert invalid.reason == "'x' is a required property"
    timeout = _through_the_wire(ToolTimeout(2.5, tool="t.x"))
    assert isinstance(timeout, ToolTimeout)
    assert timeout.timeout == 2.5
    failed = _through_the_wire(ToolFailed("ValueError", "bad value: 3", tool="t.x"))
    assert isinstance(failed, ToolFailed)
    assert (failed.cause_type, failed.cause_message) == ("ValueError", "bad value: 3")
    stale = _through_the_wire(AgentUnresponsive("a1", 2.5, tool="t.x"))
    assert isinstance(stale, AgentUnresponsive)
    assert (stale.agent_id, stale.stale_after_s, stale.cause_type) == (
        "a1",
        2.5,
        "AGENT_UNRESPONSIVE",
    )
    denied = _through_the_wire(ToolPermissionDenied("no", tool="t.x"))
    assert isinstance(denied, ToolPermissionDenied)
    assert denied.reason == "no"


@pytest.mark.parametrize("kind", TOOL_ERRORS_AS_FAILED, ids=lambda k: k.__name__)
def test_other_tool_errors_arrive_as_tool_failed(kind: type[ToolError]) -> None:
    exc = sample(kind)
    assert isinstance(exc, ToolError)
    back = _through_the_wire(exc)
    assert type(back) is ToolFailed
    assert back.cause_type == kind.__name__
    assert str(back) == str(exc)


@pytest.mark.parametrize("kind", list(TOOL_ERRORS_AS_BASE), ids=lambda k: k.__name__)
def test_some_tool_errors_arrive_as_their_base(kind: type[ToolError]) -> None:
    exc = sample(kind)
    assert isinstance(exc, ToolError)
    back = _through_the_wire(exc)
    assert type(back) is TOOL_ERRORS_AS_BASE[kind]
    assert str(back) == str(exc)


def test_a_deadline_is_a_deadline_on_both_sides() -> None:
    # ToolTimeout is a DeadlineExceeded: a caller's `except TimeoutError` works remotely too.
    assert isinstance(_through_the_wire(ToolTimeout(1.0, tool="t.x")), DeadlineExceeded)
    assert isinstance(error_from_status("DEADLINE_EXCEEDED", "late"), TimeoutError)
    assert isinstance(error_from_status("UNAVAILABLE", "closing"), BusClosed)
    assert isinstance(error_from_status("UNAUTHENTICATED", "no"), Unauthenticated)
    assert isinstance(error_from_status("PERMISSION_DENIED", "no"), WrongAgent)
    assert isinstance(error_from_status("FAILED_PRECONDITION", "no"), NotRegistered)


def test_durability_unavailable_crosses_as_unimplemented() -> None:
    # A durable registration on a server without a durable log (`loom serve --nats off`):
    # durability is not enabled in this service, which is what UNIMPLEMENTED means in gRPC.
    exc = DurabilityUnavailable("durable agent 'a1'")
    assert status_of(exc) is grpc.StatusCode.UNIMPLEMENTED
    back = error_from_status("UNIMPLEMENTED", str(exc))
    assert type(back) is DurabilityUnavailable
    assert str(back) == str(exc)
