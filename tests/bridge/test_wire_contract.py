"""The generated ``loom.v1`` descriptors against section 1 of the wire contract, field by field.

The tables below are copied from ``shared/specs/bridge-wire.md`` section 1 (what agents written
for the original Loom send and expect). Any drift of a name, tag, type, label, enum value or
RPC shape fails here; so does an addition that does not keep to the additive rules.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    ServiceDescriptor,
)

from loom.bridge._generated import (
    approvals_pb2,
    bridge_pb2,
    budget_pb2,
    budget_service_pb2,
    bus_pb2,
    cluster_status_pb2,
    directory_pb2,
    event_pb2,
    llm_pb2,
    memory_pb2,
    scopes_pb2,
    server_pb2,
    tools_pb2,
    turns_pb2,
)

ROOT = Path(__file__).resolve().parents[2]

# message -> {tag: (name, type)}; a type is a scalar name, "repeated T", "map<K,V>", a message
# name, or "enum E". Messages and enums are in package loom.v1.
MESSAGES: dict[str, dict[int, tuple[str, str]]] = {
    "AgentRegisterRequest": {
        1: ("agent_id", "string"),
        2: ("subscribed_topics", "repeated string"),
        3: ("tools", "repeated ToolDescriptor"),
        4: ("metadata", "map<string,string>"),
    },
    "AgentRegisterResponse": {1: ("success", "bool"), 2: ("error_message", "string")},
    "ClientEvent": {
        1: ("publish", "Publish"),
        2: ("ack", "Ack"),
        3: ("ping", "HeartbeatRequest"),
        4: ("tool_result", "ToolResult"),
    },
    "ServerEvent": {
        1: ("delivery", "Delivery"),
        2: ("pong", "HeartbeatResponse"),
        3: ("err", "Error"),
        4: ("tool_call", "ToolCall"),
    },
    "Publish": {1: ("topic", "string"), 2: ("event", "Event")},
    "Delivery": {1: ("topic", "string"), 2: ("event", "Event")},
    "Ack": {1: ("message_id", "string")},
    "Error": {1: ("code", "string"), 2: ("message", "string")},
    "HeartbeatRequest": {1: ("timestamp_ms", "int64")},
    "HeartbeatResponse": {1: ("timestamp_ms", "int64"), 2: ("status", "string")},
    "Event": {
        1: ("id", "string"),
        2: ("type", "string"),
        3: ("timestamp_ms", "int64"),
        4: ("source", "string"),
        5: ("metadata", "map<string,string>"),
        6: ("payload", "bytes"),
        7: ("confidence", "float"),
        8: ("tags", "repeated string"),
        9: ("priority", "int32"),
    },
    "ToolDescriptor": {
        1: ("name", "string"),
        2: ("description", "string"),
        3: ("parameters_schema", "string"),
        4: ("provider", "enum ProviderKind"),
        5: ("metadata", "map<string,string>"),
    },
    "ToolCall": {
        1: ("id", "string"),
        2: ("name", "string"),
        3: ("arguments", "string"),
        4: ("headers", "map<string,string>"),
        5: ("timeout_ms", "int64"),
        6: ("correlation_id", "string"),
        7: ("qos", "enum QoSLevel"),
    },
    "ToolResult": {
        1: ("id", "string"),
        2: ("status", "enum ToolStatus"),
        3: ("output", "string"),
        4: ("error", "ToolError"),
    },
    "ToolError": {
        1: ("code", "string"),
        2: ("message", "string"),
        3: ("details", "map<string,string>"),
    },
}

# Messages whose section-1 fields all sit in one oneof.
ONEOFS = {"ClientEvent": "msg", "ServerEvent": "msg"}

ENUMS: dict[str, dict[str, int]] = {
    "QoSLevel": {"QOS_REALTIME": 0, "QOS_BATCHED": 1, "QOS_BACKGROUND": 2},
    "ProviderKind": {
        "PROVIDER_NATIVE": 0,
        "PROVIDER_WASM": 1,
        "PROVIDER_GRPC": 2,
        "PROVIDER_MCP": 3,
    },
    "ToolStatus": {
        "TOOL_OK": 0,
        "TOOL_ERROR": 1,
        "TOOL_TIMEOUT": 2,
        "TOOL_NOT_FOUND": 3,
        "TOOL_INVALID_ARGUMENTS": 4,
    },
}

# RPC -> (request, response, client streams, server streams)
BRIDGE: dict[str, tuple[str, str, bool, bool]] = {
    "RegisterAgent": ("AgentRegisterRequest", "AgentRegisterResponse", False, False),
    "EventStream": ("ClientEvent", "ServerEvent", True, True),
    "ForwardToolCall": ("ToolCall", "ToolResult", False, False),
    "Heartbeat": ("HeartbeatRequest", "HeartbeatResponse", False, False),
}

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_DOUBLE: "double",
}

_FILES = (
    event_pb2.DESCRIPTOR,
    tools_pb2.DESCRIPTOR,
    bridge_pb2.DESCRIPTOR,
    bus_pb2.DESCRIPTOR,
    directory_pb2.DESCRIPTOR,
    server_pb2.DESCRIPTOR,
    llm_pb2.DESCRIPTOR,
    memory_pb2.DESCRIPTOR,
    approvals_pb2.DESCRIPTOR,
    budget_pb2.DESCRIPTOR,
    budget_service_pb2.DESCRIPTOR,
    cluster_status_pb2.DESCRIPTOR,
    turns_pb2.DESCRIPTOR,
    scopes_pb2.DESCRIPTOR,
)


def _local(full_name: str) -> str:
    assert full_name.startswith("loom.v1."), full_name
    return full_name.removeprefix("loom.v1.")


def _type_of(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        message = field.message_type
        assert message is not None
        if message.GetOptions().map_entry:
            key, value = (message.fields_by_name[n] for n in ("key", "value"))
            return f"map<{_type_of(key)},{_type_of(value)}>"
        base = _local(message.full_name)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        base = "enum " + _local(field.enum_type.full_name)
    else:
        base = _SCALARS[field.type]
    return f"repeated {base}" if field.is_repeated else base


def _message(name: str) -> Descriptor:
    for file in _FILES:
        if name in file.message_types_by_name:
            return file.message_types_by_name[name]
    raise AssertionError(f"no message loom.v1.{name}")


def _enum(name: str) -> EnumDescriptor:
    for file in _FILES:
        if name in file.enum_types_by_name:
            return file.enum_types_by_name[name]
    raise AssertionError(f"no enum loom.v1.{name}")


def _service(name: str) -> ServiceDescriptor:
    for file in _FILES:
        if name in file.services_by_name:
            return file.services_by_name[name]
    raise AssertionError(f"no service loom.v1.{name}")


def test_one_package() -> None:
    assert {f.package for f in _FILES} == {"loom.v1"}
    assert sorted(f.name for f in _FILES) == sorted(
        str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto" / "loom" / "v1").glob("*.proto")
    )


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_section_1_message(name: str) -> None:
    message = _message(name)
    assert message.full_name == f"loom.v1.{name}"
    for tag, (field_name, type_name) in MESSAGES[name].items():
        field = message.fields_by_number.get(tag)
        assert field is not None, f"{name}: no field with tag {tag}"
        assert (field.name, _type_of(field)) == (field_name, type_name), f"{name} tag {tag}"
        # Section 1 fields are proto3 implicit-presence scalars or plain message fields: an
        # `optional` on a scalar would not change the bytes, but it is not the contract.
        if field.type != FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
            assert not field.has_presence, f"{name}.{field_name} must not be optional"


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_additions_keep_to_new_tags(name: str) -> None:
    """Every field beyond the contract's is new: tag 10 or above, a name not taken."""
    message = _message(name)
    extra = [f for f in message.fields if f.number not in MESSAGES[name]]
    for field in extra:
        assert field.number >= 10, f"{name}.{field.name}: additions start at tag 10"
    reserved_names = {n for n, _ in MESSAGES[name].values()}
    assert not reserved_names & {f.name for f in extra}


@pytest.mark.parametrize(("name", "oneof"), sorted(ONEOFS.items()))
def test_section_1_oneof(name: str, oneof: str) -> None:
    message = _message(name)
    assert [o.name for o in message.oneofs] == [oneof]
    members = {f.number for f in message.oneofs_by_name[oneof].fields}
    assert set(MESSAGES[name]) <= members
    # The additions are oneof variants too, so a frame is still exactly one thing.
    assert members == {f.number for f in message.fields}


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_section_1_enum(name: str) -> None:
    enum = _enum(name)
    assert enum.full_name == f"loom.v1.{name}"
    assert {v.name: v.number for v in enum.values} == ENUMS[name]


def test_bridge_service() -> None:
    service = _service("Bridge")
    assert service.full_name == "loom.v1.Bridge"
    got = {
        m.name: (
            _local(m.input_type.full_name),
            _local(m.output_type.full_name),
            m.client_streaming,
            m.server_streaming,
        )
        for m in service.methods
    }
    assert got == BRIDGE


def test_event_envelope_addition() -> None:
    """Section 2's typed envelope: a new field on Event, with every runtime envelope field."""
    field = _message("Event").fields_by_name["envelope"]
    assert (field.number, _type_of(field)) == (10, "Envelope")
    envelope = {f.name: _type_of(f) for f in _message("Envelope").fields}
    assert envelope == {
        "thread_id": "string",
        "correlation_id": "string",
        "sender": "string",
        "reply_to": "string",
        "ttl": "uint32",
        "hop": "uint32",
        "traceparent": "string",
        "tracestate": "string",
    }
    # `ttl` has presence: an envelope that leaves it out means the default budget, not 0.
    assert _message("Envelope").fields_by_name["ttl"].has_presence


def test_added_services() -> None:
    tools = {m.name: m for m in _service("ToolService").methods}
    assert set(tools) == {"ListTools", "Call", "CallStream"}  # issue 15: CallStream
    assert tools["CallStream"].server_streaming
    assert not tools["CallStream"].client_streaming
    bus = {m.name: m for m in _service("EventBus").methods}
    assert set(bus) == {
        *("Publish", "Subscribe", "GetStats"),
        *("Replay", "RetryDeadLetter", "DropDeadLetter"),  # issue 12: replay and dead letters
    }
    for streaming in ("Subscribe", "Replay"):
        assert bus[streaming].server_streaming
        assert not bus[streaming].client_streaming


def test_the_scopes_service() -> None:
    # Added (issue 16 §2, scope-exact): one bidirectional stream of reservations per process.
    (reserve,) = _service("Scopes").methods
    assert reserve.name == "Reserve"
    assert reserve.client_streaming
    assert reserve.server_streaming
    assert set(_message("ScopeRequest").oneofs_by_name["kind"].fields) == {
        _message("ScopeRequest").fields_by_name["acquire"],
        _message("ScopeRequest").fields_by_name["release"],
    }


def test_old_client_bytes_decode_unchanged() -> None:
    """Bytes an old client writes (section-1 fields only) parse to the same values, and what we
    write parses for it: unknown fields (our additions) are skipped by any proto3 reader."""
    old = bridge_pb2.ClientEvent(
        publish=bridge_pb2.Publish(
            topic="a.b",
            event=event_pb2.Event(id="1", type="t", metadata={"loom.sender": "x"}, priority=3),
        )
    )
    wire = old.SerializeToString()
    # tag 1 (publish), wire type 2 (length-delimited): the first byte is 0x0A, as it always was.
    assert wire[0] == 0x0A
    assert bridge_pb2.ClientEvent.FromString(wire) == old


def _run_check(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gen_protos.py"),
            "--check",
            "--dir",
            str(directory),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_generated_code_is_fresh() -> None:
    result = _run_check(ROOT / "bridge" / "_generated")
    assert result.returncode == 0, result.stderr


def test_stale_generated_code_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "_generated"
    shutil.copytree(ROOT / "bridge" / "_generated", copy, ignore=shutil.ignore_patterns("__py*"))
    target = copy / "event_pb2.pyi"
    target.write_text(target.read_text().replace("ttl: int", "ttl: str"))
    (copy / "old_pb2.py").write_text("")
    result = _run_check(copy)
    assert result.returncode == 1
    assert "make proto" in result.stderr
    assert "differs: event_pb2.pyi" in result.stderr
    assert "stale): old_pb2.py" in result.stderr


# The original Loom's MemoryService (shared/specs/memory-wire.md): every message exactly, with
# nothing added (its clients' generated code is the contract).
MEMORY: dict[str, dict[int, tuple[str, str]]] = {
    "PlanRecord": {
        1: ("timestamp_ms", "int64"),
        2: ("symbol", "string"),
        3: ("action", "string"),
        4: ("confidence", "float"),
        5: ("reasoning", "string"),
        6: ("plan_hash", "string"),
        7: ("method", "string"),
        8: ("metadata", "map<string,string>"),
    },
    "ExecutionRecord": {
        1: ("timestamp_ms", "int64"),
        2: ("plan_hash", "string"),
        3: ("symbol", "string"),
        4: ("action", "string"),
        5: ("confidence", "float"),
        6: ("status", "string"),
        7: ("executed", "bool"),
        8: ("order_id", "string"),
        9: ("order_size_usdt", "float"),
        10: ("error_message", "string"),
    },
    "SavePlanRequest": {1: ("session_id", "string"), 2: ("plan", "PlanRecord")},
    "SavePlanResponse": {
        1: ("success", "bool"),
        2: ("plan_hash", "string"),
        3: ("error_message", "string"),
    },
    "GetRecentPlansRequest": {
        1: ("session_id", "string"),
        2: ("symbol", "string"),
        3: ("limit", "int32"),
    },
    "GetRecentPlansResponse": {
        1: ("plans", "repeated PlanRecord"),
        2: ("success", "bool"),
        3: ("error_message", "string"),
    },
    "CheckDuplicateRequest": {
        1: ("session_id", "string"),
        2: ("plan", "PlanRecord"),
        3: ("time_window_sec", "int32"),
    },
    "CheckDuplicateResponse": {
        1: ("is_duplicate", "bool"),
        2: ("duplicate_plan", "PlanRecord"),
        3: ("time_since_duplicate_ms", "int64"),
    },
    "MarkExecutedRequest": {
        1: ("session_id", "string"),
        2: ("plan_hash", "string"),
        3: ("execution", "ExecutionRecord"),
    },
    "MarkExecutedResponse": {1: ("success", "bool"), 2: ("error_message", "string")},
    "CheckExecutedRequest": {1: ("session_id", "string"), 2: ("plan_hash", "string")},
    "CheckExecutedResponse": {1: ("is_executed", "bool"), 2: ("execution", "ExecutionRecord")},
    "GetExecutionStatsRequest": {1: ("session_id", "string"), 2: ("symbol", "string")},
    "GetExecutionStatsResponse": {
        1: ("total_executions", "int32"),
        2: ("successful_executions", "int32"),
        3: ("failed_executions", "int32"),
        4: ("win_rate", "float"),
        5: ("duplicate_prevented", "int32"),
        6: ("recent_executions", "repeated ExecutionRecord"),
    },
    "MemoryWriteRequest": {
        1: ("session_id", "string"),
        2: ("event", "Event"),
        3: ("metadata", "map<string,string>"),
    },
    "MemoryWriteResponse": {1: ("success", "bool"), 2: ("error_message", "string")},
    "MemoryRetrieveRequest": {
        1: ("session_id", "string"),
        2: ("query", "string"),
        3: ("k", "int32"),
        4: ("filters", "map<string,string>"),
    },
    "MemoryRetrieveResponse": {
        1: ("results", "repeated string"),
        2: ("success", "bool"),
        3: ("error_message", "string"),
    },
    "MemorySummarizeRequest": {1: ("session_id", "string"), 2: ("max_events", "int32")},
    "MemorySummarizeResponse": {
        1: ("summary", "string"),
        2: ("event_count", "int32"),
        3: ("success", "bool"),
        4: ("error_message", "string"),
    },
}

MEMORY_RPCS = {
    "SavePlan": ("SavePlanRequest", "SavePlanResponse"),
    "GetRecentPlans": ("GetRecentPlansRequest", "GetRecentPlansResponse"),
    "CheckDuplicate": ("CheckDuplicateRequest", "CheckDuplicateResponse"),
    "MarkExecuted": ("MarkExecutedRequest", "MarkExecutedResponse"),
    "CheckExecuted": ("CheckExecutedRequest", "CheckExecutedResponse"),
    "GetExecutionStats": ("GetExecutionStatsRequest", "GetExecutionStatsResponse"),
    "AppendEvent": ("MemoryWriteRequest", "MemoryWriteResponse"),
    "Retrieve": ("MemoryRetrieveRequest", "MemoryRetrieveResponse"),
    "SummarizeEpisode": ("MemorySummarizeRequest", "MemorySummarizeResponse"),
}


@pytest.mark.parametrize("name", sorted(MEMORY))
def test_memory_message_is_the_original_s(name: str) -> None:
    message = _message(name)
    assert message.file.name == "loom/v1/memory.proto"
    got = {f.number: (f.name, _type_of(f)) for f in message.fields}
    assert got == MEMORY[name]
    for field in message.fields:
        if field.type != FieldDescriptor.TYPE_MESSAGE and not field.is_repeated:
            assert not field.has_presence, f"{name}.{field.name} must not be optional"


def test_memory_service_is_the_original_s() -> None:
    service = _service("MemoryService")
    got = {
        m.name: (_local(m.input_type.full_name), _local(m.output_type.full_name))
        for m in service.methods
    }
    assert got == MEMORY_RPCS
    assert not any(m.client_streaming or m.server_streaming for m in service.methods)
    assert {v.name: v.number for v in _enum("MemoryOpType").values} == {
        "SAVE_PLAN": 0,
        "GET_RECENT_PLANS": 1,
        "CHECK_DUPLICATE": 2,
        "MARK_EXECUTED": 3,
        "GET_EXECUTION_STATS": 4,
        "APPEND_EVENT": 5,
        "RETRIEVE": 6,
        "SUMMARIZE": 7,
    }


def test_memory_bytes_of_an_old_client_decode() -> None:
    """Bytes written field by field as the original's client writes them parse to the values
    it meant (tag 1 session_id, tag 2 plan with tag 2 symbol and tag 6 plan_hash)."""
    plan = b"\x12\x03BTC" + b"\x32\x02h1"  # symbol = "BTC", plan_hash = "h1"
    raw = b"\x0a\x05agent" + b"\x12" + bytes([len(plan)]) + plan
    request = memory_pb2.SavePlanRequest.FromString(raw)
    assert (request.session_id, request.plan.symbol, request.plan.plan_hash) == (
        "agent",
        "BTC",
        "h1",
    )
    assert request.SerializeToString() == raw
