"""Request bytes that do not decode, on every method of every service a live server serves:
``INVALID_ARGUMENT`` with a one-line reason (never ``UNKNOWN``), counted, and logged as a
warning at most ``WARN_BURST`` times a window (never a traceback); then Hypothesis sends every
method arbitrary bytes and well-formed messages with odd values."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import grpc
import grpc.aio
import pytest
from google.protobuf.message import Message
from grpc_health.v1.health import SERVICE_NAME as HEALTH  # type: ignore[import-untyped]
from grpc_reflection.v1alpha.reflection import (  # type: ignore[import-untyped]
    SERVICE_NAME as REFLECTION,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loom.bridge import BridgeServer
from loom.bridge._generated import bridge_pb2
from loom.bridge._handlers import WARN_BURST, WarningThrottle

from ._raw_calls import Method, call_raw, loom_services, messages, methods_of, served_methods
from ._server_harness import OldAgent, auth, channel, serving

pytestmark = pytest.mark.anyio

GARBAGE = b"\xff\xff\xff"  # a tag whose varint never ends: no message decodes from it

# Methods every Loom server serves; the enumeration must find at least these.
KNOWN = {
    "/loom.v1.Bridge/RegisterAgent",
    "/loom.v1.Bridge/EventStream",
    "/loom.v1.Bridge/ForwardToolCall",
    "/loom.v1.Bridge/Heartbeat",
    "/loom.v1.ToolService/ListTools",
    "/loom.v1.ToolService/Call",
    "/loom.v1.EventBus/Publish",
    "/loom.v1.EventBus/Subscribe",
    "/loom.v1.EventBus/GetStats",
    "/loom.v1.Directory/ListAgents",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}

# What a call may end with, whatever it was sent: a status that names a client's mistake or
# the server's answer; never one that says a handler broke (UNKNOWN, INTERNAL), a method
# missing (UNIMPLEMENTED), or a server that did not answer in time (DEADLINE_EXCEEDED).
BROKEN = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _broken(code: grpc.StatusCode, details: str) -> bool:
    # UNIMPLEMENTED is also the code of a service this server has but did not enable (gRPC's
    # "not supported/enabled in this service"): no durable log (DurabilityUnavailable,
    # bridge/_status.py), whose replay and dead-letter calls say so, and no approvals store
    # (bridge/_approvals_service.py); a method missing says neither.
    if code is grpc.StatusCode.UNIMPLEMENTED and (
        "needs durability" in details or "keeps no approvals" in details
    ):
        return False
    return code in BROKEN


class _Records(logging.Handler):
    """Every record logged while installed (on the root logger: grpc's own logs included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.ERROR or r.exc_info]

    def warnings(self, logger: str = "loom.bridge") -> list[str]:
        return [
            r.getMessage()
            for r in self.records
            if r.name == logger and r.levelno == logging.WARNING
        ]


@dataclass
class Live:
    server: BridgeServer
    ch: grpc.aio.Channel
    methods: list[Method]
    log: _Records


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    records = _Records()
    root = logging.getLogger()
    root.addHandler(records)
    try:
        async with serving() as s, channel(s.target) as ch:
            live = Live(s.server, ch, methods=await served_methods(ch), log=records)
            try:
                yield live
            finally:
                # pytest holds a fixture's value until after its event loop is closed; a gRPC
                # object still alive then binds the next test's loop to this closed one
                # ("Event loop is closed"). serving() and channel() collect them: let them.
                vars(live).clear()
    finally:
        root.removeHandler(records)


async def test_the_methods_are_enumerated_from_the_server_and_the_protos(live: Live) -> None:
    paths = {m.path for m in live.methods}
    assert paths >= KNOWN, sorted(KNOWN - paths)
    # Every service of Loom's .proto files is among them (so a new one is fuzzed too), and
    # the well-formed fuzzing below covers every method served.
    assert {p.split("/")[1] for p in paths} >= loom_services()
    assert paths == {m.path for m in FUZZED}


async def test_undecodable_bytes_get_invalid_argument_on_every_method(live: Live) -> None:
    for method in live.methods:
        code, details = await call_raw(live.ch, method, GARBAGE)
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (method.path, code, details)
        # One line, naming the message the bytes are not.
        assert method.request_type.full_name in details, (method.path, details)
        assert "\n" not in details
    assert not live.log.errors()
    assert live.server.statistics().malformed_requests == len(live.methods)
    warnings = live.log.warnings()
    assert len(warnings) == min(len(live.methods), WARN_BURST)
    assert all("\n" not in w and "answered INVALID_ARGUMENT" in w for w in warnings)
    # Each names the method, and for a unary request the peer (sent in order: the first first).
    assert warnings[0].startswith(f"{live.methods[0].path} from ipv4:127.0.0.1:"), warnings[0]


async def test_a_flood_of_garbage_logs_a_bounded_few_lines(live: Live) -> None:
    flood = 300
    unary = [m for m in live.methods if not m.client_streaming]

    async def send(i: int) -> None:
        code, _ = await call_raw(live.ch, unary[i % len(unary)], GARBAGE + bytes([i % 256]))
        assert code is grpc.StatusCode.INVALID_ARGUMENT

    with anyio.fail_after(60):
        for start in range(0, flood, 50):
            async with anyio.create_task_group() as tg:
                for i in range(start, start + 50):
                    tg.start_soon(send, i)
    assert live.server.statistics().malformed_requests == flood
    assert len(live.log.warnings()) == WARN_BURST  # one line each, then silence
    assert not live.log.errors()
    # The server serves on.
    agent = await OldAgent(live.ch, "after-the-flood").connect(topics=["x.>"])
    await agent.ping(7)
    await agent.close()


async def test_a_token_is_checked_before_any_bytes_are_decoded() -> None:
    async with serving(token="s3cret-t0ken") as s, channel(s.target) as ch:
        # Reflection wants the token too on such a server: Loom's protos list the methods.
        methods = methods_of(loom_services())
        for method in methods:
            code, _ = await call_raw(ch, method, GARBAGE)
            assert code is grpc.StatusCode.UNAUTHENTICATED, method.path
        assert s.server.statistics().malformed_requests == 0
        for method in methods:
            code, _ = await call_raw(ch, method, GARBAGE, metadata=auth("s3cret-t0ken"))
            assert code is grpc.StatusCode.INVALID_ARGUMENT, method.path


def test_the_throttle_logs_a_burst_per_window_and_says_what_it_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttle = WarningThrottle(
        logging.getLogger("loom.test.throttle"), burst=2, interval_s=10.0, clock=lambda: now[0]
    )
    with caplog.at_level(logging.WARNING, logger="loom.test.throttle"):
        for i in range(5):
            throttle.warning(f"w{i}")
        now[0] = 9.9
        throttle.warning("w5")
        assert [r.getMessage() for r in caplog.records] == ["w0", "w1"]
        now[0] = 10.0
        throttle.warning("w6")
        throttle.warning("w7")
        throttle.warning("w8")
        now[0] = 30.0
        throttle.warning("w9")
    assert [r.getMessage() for r in caplog.records] == [
        "w0",
        "w1",
        "w6 (4 more like it not logged in the previous window)",
        "w7",
        "w9 (1 more like it not logged in the previous window)",
    ]


# ---------------------------------------------------------------- Hypothesis, every method

_FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def _check_everything_served(live: Live) -> None:
    assert not live.log.errors(), live.log.errors()
    good = OldAgent(live.ch, "fuzz-good-client")
    await good.connect(topics=["check.>"])
    await good.ping(3)
    await good.close()
    await good.bridge.RegisterAgent(bridge_pb2.AgentRegisterRequest(agent_id="fuzz-good-client"))


@_FUZZ
@given(payload=st.binary(max_size=64))
async def test_arbitrary_bytes_to_every_method(live: Live, payload: bytes) -> None:
    for method in live.methods:
        code, details = await call_raw(live.ch, method, payload)
        assert not _broken(code, details), (method.path, payload, code, details)
    await _check_everything_served(live)


# Drawn before the test runs, so for the methods known when the module loads: Loom's protos,
# health and reflection. (A draw inside an anyio test that runs out of data stops it with a
# BaseException that takes the test's event loop down.) The test above fails if the server
# serves a method outside these.
FUZZED = methods_of(loom_services() | {HEALTH, REFLECTION})


@_FUZZ
@given(requests=st.tuples(*(messages(m.request_type) for m in FUZZED)))
async def test_well_formed_odd_messages_to_every_method(
    live: Live, requests: tuple[Message, ...]
) -> None:
    for method, request in zip(FUZZED, requests, strict=True):
        code, details = await call_raw(live.ch, method, request.SerializeToString())
        assert not _broken(code, details), (method.path, request, code, details)
    await _check_everything_served(live)
