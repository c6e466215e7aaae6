"""Traces exported over OTLP, as an operator meets them (issue 14, section 1): a real ``loom
serve`` subprocess and agent processes (``Agent.run()``), configured by ``--otlp-endpoint``
and the standard ``OTEL_*`` variables, exporting to a real OTLP/gRPC receiver in the test.

A remote publisher, the server, a remote handler and the tool it calls (a capability of a
third agent process) form one trace, each hop a child of the one before."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import anyio
import pytest

from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

from .._otlp import ExportedSpan, otlp_receiver
from ._cli_support import LOOM, PYTHON, loom_serve, running_argv

pytestmark = pytest.mark.anyio

CALC = """\
from loom import Agent, capability


@capability("calc.add")
async def add(a: int, b: int) -> int:
    \"\"\"Add two numbers.\"\"\"
    return a + b


calc = Agent("calc", capabilities=[add])

if __name__ == "__main__":
    calc.run()
"""

WORKER = """\
import json
import sys

from loom import Agent


async def on_event(ctx, topic, event):
    numbers = json.loads(event.payload)
    total = await ctx.tool("calc.add", numbers)
    print(f"handled {topic}: {total}", file=sys.stderr, flush=True)


worker = Agent("worker", topics=["jobs.*"], on_event=on_event)

if __name__ == "__main__":
    worker.run()
"""

PUBLISHER = """\
import sys

from loom import Agent


async def on_start(ctx):
    await ctx.emit("jobs.new", payload=b'{"a": 2, "b": 3}')
    print("published", file=sys.stderr, flush=True)


publisher = Agent("publisher", on_start=on_start)

if __name__ == "__main__":
    publisher.run()
"""


def _env(address: str, **extra: str) -> dict[str, str]:
    """This environment without LOOM_* or OTEL_* variables (nothing of a developer's shell
    leaks in), with the server's address and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOM_", "OTEL_"))}
    # Batches go out within 0.1 s (the SDK's own variable), so the test waits for spans,
    # not for the exporter's 5 s schedule.
    env.update(LOOM_BRIDGE_ADDR=address, OTEL_BSP_SCHEDULE_DELAY="100", **extra)
    return env


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _one(spans: list[ExportedSpan], service: str, name: str) -> ExportedSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    assert len(found) == 1, (service, name, [f"{s.service}: {s.name}" for s in spans])
    return found[0]


def _have_the_turn(spans: list[ExportedSpan]) -> bool:
    names = {(s.service, s.name) for s in spans}
    return {
        ("publisher", "jobs.new publish"),
        ("loom-serve", "jobs.new publish"),
        ("worker", "jobs.new process"),
        ("worker", "call_tool calc.add"),
        ("loom-serve", "execute_tool calc.add"),
        ("calc", "execute_tool calc.add"),
    } <= names


async def test_a_cross_process_turn_is_one_trace(tmp_path: Path) -> None:
    calc = _write(tmp_path, "calc_agent.py", CALC)
    worker = _write(tmp_path, "worker_agent.py", WORKER)
    publisher = _write(tmp_path, "publisher_agent.py", PUBLISHER)
    with anyio.fail_after(90):
        async with (
            otlp_receiver() as receiver,
            # The server by its flag; the agents by the standard variables.
            loom_serve(tmp_path, "--otlp-endpoint", receiver.endpoint) as (server, address),
        ):
            await server.wait_for(f"traces to {receiver.endpoint}")
            otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
            async with (
                running_argv([*PYTHON, str(calc)], cwd=tmp_path, env=_env(address, **otel)) as c,
                running_argv([*PYTHON, str(worker)], cwd=tmp_path, env=_env(address, **otel)) as w,
            ):
                await c.wait_for("connected to .* as calc$")
                await w.wait_for("connected to .* as worker$")
                env = _env(address, OTEL_SERVICE_NAME="publisher", **otel)
                async with running_argv([*PYTHON, str(publisher)], cwd=tmp_path, env=env) as p:
                    await p.wait_for("published")
                    await w.wait_for("handled jobs.new: 5")
                    spans = await receiver.wait_until(_have_the_turn, timeout=30)
                    assert await p.stop(signal.SIGTERM) == 0
                assert await w.stop(signal.SIGTERM) == 0
                assert await c.stop(signal.SIGTERM) == 0

    sent = _one(spans, "publisher", "jobs.new publish")
    relayed = _one(spans, "loom-serve", "jobs.new publish")
    process = _one(spans, "worker", "jobs.new process")
    call = _one(spans, "worker", "call_tool calc.add")
    served = _one(spans, "loom-serve", "execute_tool calc.add")
    ran = _one(spans, "calc", "execute_tool calc.add")
    chain = [sent, relayed, process, call, served, ran]
    # One trace, each hop the child of the one before, across four processes.
    assert {s.trace_id for s in chain} == {sent.trace_id}
    assert sent.parent_id == ""
    for parent, child in itertools.pairwise(chain):
        assert child.parent_id == parent.span_id, (parent.name, child.name)
    assert [s.kind for s in chain] == [
        "PRODUCER",
        "PRODUCER",
        "CONSUMER",
        "CLIENT",
        "SERVER",
        "SERVER",
    ]
    assert sent.attributes["messaging.destination.name"] == "jobs.new"
    assert sent.attributes["messaging.operation.type"] == "publish"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["loom.agent.id"] == "worker"
    assert process.attributes["messaging.message.id"] == sent.attributes["messaging.message.id"]
    for span in (call, served, ran):
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert span.attributes["gen_ai.tool.name"] == "calc.add"
    assert (served.attributes["loom.bridge.side"], ran.attributes["loom.bridge.side"]) == (
        "server",
        "agent",
    )
    assert all(s.status_code != 2 for s in chain)  # none is an error


async def test_nothing_is_exported_when_tracing_is_not_configured(tmp_path: Path) -> None:
    # A receiver listens, but nobody is told of it: no process exports anything, and none
    # so much as loads the OpenTelemetry SDK or the exporter.
    worker = _write(tmp_path, "worker_agent.py", WORKER)
    calc = _write(tmp_path, "calc_agent.py", CALC)
    publisher = _write(tmp_path, "publisher_agent.py", PUBLISHER + _SHOW_MODULES)
    with anyio.fail_after(60):
        async with otlp_receiver() as receiver, loom_serve(tmp_path) as (server, address):
            async with (
                running_argv([*PYTHON, str(calc)], cwd=tmp_path, env=_env(address)) as c,
                running_argv([*PYTHON, str(worker)], cwd=tmp_path, env=_env(address)) as w,
            ):
                await c.wait_for("connected to .* as calc$")
                await w.wait_for("connected to .* as worker$")
                async with running_argv(
                    [*PYTHON, str(publisher)], cwd=tmp_path, env=_env(address)
                ) as p:
                    await w.wait_for("handled jobs.new: 5")
                    assert await p.stop(signal.SIGTERM) == 0
                assert await w.stop(signal.SIGTERM) == 0
                assert await c.stop(signal.SIGTERM) == 0
            assert await server.stop(signal.SIGTERM) == 0
            assert "traces to" not in server.output
    assert receiver.trace_exports == 0
    assert "sdk loaded: False, exporter loaded: False" in p.output


# Appended to the publisher: once it has stopped, whether tracing that is off loaded anything.
_SHOW_MODULES = """
    import sys as _sys
    print(
        f"sdk loaded: {'opentelemetry.sdk.trace' in _sys.modules}, exporter loaded: "
        f"{'opentelemetry.exporter.otlp.proto.grpc.trace_exporter' in _sys.modules}",
        file=_sys.stderr,
        flush=True,
    )
"""


async def test_a_sampler_of_zero_exports_nothing(tmp_path: Path) -> None:
    # Sampled out at the root: the publisher's trace is dropped there, and every hop after
    # it follows the caller's decision (parent-based), so nobody exports a span of it.
    worker = _write(tmp_path, "worker_agent.py", WORKER)
    calc = _write(tmp_path, "calc_agent.py", CALC)
    publisher = _write(tmp_path, "publisher_agent.py", PUBLISHER)
    with anyio.fail_after(60):
        async with otlp_receiver() as receiver:
            flags = ("--otlp-endpoint", receiver.endpoint, "--trace-sample", "0")
            async with loom_serve(tmp_path, *flags) as (server, address):
                otel = {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "0",
                }
                async with (
                    running_argv(
                        [*PYTHON, str(calc)], cwd=tmp_path, env=_env(address, **otel)
                    ) as c,
                    running_argv(
                        [*PYTHON, str(worker)], cwd=tmp_path, env=_env(address, **otel)
                    ) as w,
                ):
                    await c.wait_for("connected to .* as calc$")
                    await w.wait_for("connected to .* as worker$")
                    async with running_argv(
                        [*PYTHON, str(publisher)], cwd=tmp_path, env=_env(address, **otel)
                    ) as p:
                        await w.wait_for("handled jobs.new: 5")
                        assert await p.stop(signal.SIGTERM) == 0
                    assert await w.stop(signal.SIGTERM) == 0
                    assert await c.stop(signal.SIGTERM) == 0
                # Stopped: every process has flushed what it had.
                assert await server.stop(signal.SIGTERM) == 0
    assert receiver.spans == []


async def test_an_unsampled_root_is_followed_by_hops_that_would_keep_everything(
    tmp_path: Path,
) -> None:
    # The publisher keeps nothing (its runtime decides without the SDK and sends the event
    # bare as far as its own bus goes); the server, the worker and the tool's agent keep
    # every trace they begin. The event leaves the publisher stamped "not sampled", so
    # every later hop follows that (parent-based) and records nothing of this trace.
    worker = _write(tmp_path, "worker_agent.py", WORKER)
    calc = _write(tmp_path, "calc_agent.py", CALC)
    publisher = _write(tmp_path, "publisher_agent.py", PUBLISHER)
    flow = {"jobs.new publish", "jobs.new process", "call_tool calc.add", "execute_tool calc.add"}
    with anyio.fail_after(60):
        async with otlp_receiver() as receiver:
            flags = ("--otlp-endpoint", receiver.endpoint, "--trace-sample", "1")
            async with loom_serve(tmp_path, *flags) as (server, address):
                keep_all = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
                keep_none = {
                    **keep_all,
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "0",
                }
                async with (
                    running_argv(
                        [*PYTHON, str(calc)], cwd=tmp_path, env=_env(address, **keep_all)
                    ) as c,
                    running_argv(
                        [*PYTHON, str(worker)], cwd=tmp_path, env=_env(address, **keep_all)
                    ) as w,
                ):
                    await c.wait_for("connected to .* as calc$")
                    await w.wait_for("connected to .* as worker$")
                    async with running_argv(
                        [*PYTHON, str(publisher)], cwd=tmp_path, env=_env(address, **keep_none)
                    ) as p:
                        await w.wait_for("handled jobs.new: 5")
                        assert await p.stop(signal.SIGTERM) == 0
                    assert await w.stop(signal.SIGTERM) == 0
                    assert await c.stop(signal.SIGTERM) == 0
                assert await server.stop(signal.SIGTERM) == 0
    assert [f"{s.service}: {s.name}" for s in receiver.spans if s.name in flow] == []


ASKER = """\
import sys

from loom import Agent


async def on_start(ctx):
    await ctx.emit("questions.new", payload=b"What is 2 + 3?")


async def on_event(ctx, topic, event):
    print(f"answer: {event.payload.decode()}", file=sys.stderr, flush=True)


asker = Agent("asker", on_start=on_start, on_event=on_event)

if __name__ == "__main__":
    asker.run()
"""


def _a_turn_and_its_tool(spans: list[ExportedSpan]) -> bool:
    names = {(s.service, s.name) for s in spans}
    return {
        ("loom-serve", "invoke_agent assistant"),
        ("loom-serve", "chat scripted-model"),
        ("calc", "execute_tool calc.add"),
    } <= names and sum(1 for s in spans if s.name == "chat scripted-model") == 2


async def test_a_cognitive_turn_its_model_calls_and_its_remote_tool_are_one_trace(
    tmp_path: Path,
) -> None:
    # The server hosts a cognitive agent over a scripted model; a remote agent asks it, and
    # the model calls a capability of another remote agent.
    calc = _write(tmp_path, "calc_agent.py", CALC)
    asker = _write(tmp_path, "asker_agent.py", ASKER)
    with anyio.fail_after(90):
        async with otlp_receiver() as receiver, ScriptedLLMServer() as llm:
            (tmp_path / "loom.toml").write_text(
                "[llm.scripted]\n"
                'kind = "openai"\n'
                'model = "scripted-model"\n'
                f'base_url = "{llm.openai_base_url}"\n'
                "timeout_s = 10\n"
                "\n[agents.assistant]\n"
                'llm = "scripted"\n'
                'topics = ["questions.*"]\n'
                'capabilities = "all"\n'
            )
            llm.push(
                Reply(
                    tool_calls=[ScriptedToolCall(name="calc_add", arguments={"a": 2, "b": 3})],
                    prompt_tokens=30,
                    completion_tokens=9,
                ),
                Reply(text="5", prompt_tokens=42, completion_tokens=1),
            )
            async with loom_serve(tmp_path, "--otlp-endpoint", receiver.endpoint) as (
                server,
                address,
            ):
                await server.wait_for("hosting agent assistant")
                otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
                async with running_argv(
                    [*PYTHON, str(calc)], cwd=tmp_path, env=_env(address, **otel)
                ) as c:
                    await c.wait_for("connected to .* as calc$")
                    async with running_argv(
                        [*PYTHON, str(asker)], cwd=tmp_path, env=_env(address, **otel)
                    ) as a:
                        await a.wait_for("answer: 5")
                        spans = await receiver.wait_until(_a_turn_and_its_tool, timeout=30)
                        assert await a.stop(signal.SIGTERM) == 0
                    assert await c.stop(signal.SIGTERM) == 0

    sent = _one(spans, "asker", "questions.new publish")
    relayed = _one(spans, "loom-serve", "questions.new publish")
    process = _one(spans, "loom-serve", "questions.new process")
    turn = _one(spans, "loom-serve", "invoke_agent assistant")
    chats = [s for s in spans if s.name == "chat scripted-model"]
    tool = _one(spans, "loom-serve", "execute_tool calc.add")
    ran = _one(spans, "calc", "execute_tool calc.add")
    assert {s.trace_id for s in [sent, relayed, process, turn, *chats, tool, ran]} == {
        sent.trace_id
    }
    assert relayed.parent_id == sent.span_id
    assert process.parent_id == relayed.span_id
    assert turn.parent_id == process.span_id
    by_id = {s.span_id: s for s in spans}
    # Each model call and the tool call sit in an iteration of the turn.
    for span in [*chats, tool]:
        assert by_id[span.parent_id].name.startswith("iteration[")
        assert by_id[span.parent_id].parent_id == turn.span_id
    # The remote agent's side of the call descends from the turn's tool call (through the
    # handler's call_tool span).
    ancestor = by_id[ran.parent_id]
    while ancestor.span_id != tool.span_id:
        ancestor = by_id[ancestor.parent_id]
    first, second = sorted(chats, key=lambda s: s.attributes["gen_ai.usage.input_tokens"])
    assert first.attributes["gen_ai.request.model"] == "scripted-model"
    assert first.attributes["gen_ai.provider.name"] == "openai"
    assert (
        first.attributes["gen_ai.usage.input_tokens"],
        first.attributes["gen_ai.usage.output_tokens"],
    ) == (30, 9)
    assert first.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert second.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert turn.attributes["gen_ai.usage.input_tokens"] == 72
    assert turn.attributes["gen_ai.agent.name"] == "assistant"
    assert tool.attributes["gen_ai.tool.name"] == "calc.add"


THINKER = """\
from loom import CognitiveAgent

thinker = CognitiveAgent("thinker", llm="server", topics=["questions.*"])

if __name__ == "__main__":
    thinker.run()
"""


async def test_a_remote_turn_and_the_servers_model_call_are_one_trace(tmp_path: Path) -> None:
    # A cognitive agent in its own process calls the server's model (loom.v1.LLM): the
    # server's chat span is a child of the remote turn's iteration.
    thinker = _write(tmp_path, "thinker_agent.py", THINKER)
    asker = _write(tmp_path, "asker_agent.py", ASKER)

    def done(spans: list[ExportedSpan]) -> bool:
        names = {(s.service, s.name) for s in spans}
        return {("thinker", "invoke_agent thinker"), ("loom-serve", "chat scripted-model")} <= names

    with anyio.fail_after(90):
        async with otlp_receiver() as receiver, ScriptedLLMServer() as llm:
            (tmp_path / "loom.toml").write_text(
                "[llm.scripted]\n"
                'kind = "openai"\n'
                'model = "scripted-model"\n'
                f'base_url = "{llm.openai_base_url}"\n'
                "timeout_s = 10\n"
            )
            llm.push(Reply(text="5", prompt_tokens=12, completion_tokens=1))
            flags = ("--otlp-endpoint", receiver.endpoint)
            async with loom_serve(tmp_path, *flags) as (_server, address):
                otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
                async with running_argv(
                    [*PYTHON, str(thinker)], cwd=tmp_path, env=_env(address, **otel)
                ) as t:
                    await t.wait_for("connected to .* as thinker$")
                    async with running_argv(
                        [*PYTHON, str(asker)], cwd=tmp_path, env=_env(address, **otel)
                    ) as a:
                        await a.wait_for("answer: 5")
                        spans = await receiver.wait_until(done, timeout=30)
                        assert await a.stop(signal.SIGTERM) == 0
                    assert await t.stop(signal.SIGTERM) == 0

    process = _one(spans, "thinker", "questions.new process")
    turn = _one(spans, "thinker", "invoke_agent thinker")
    iteration = _one(spans, "thinker", "iteration[1]")
    chat = _one(spans, "loom-serve", "chat scripted-model")
    assert turn.parent_id == process.span_id
    assert iteration.parent_id == turn.span_id
    # The server's router picks the provider (llm.route), whose chat span follows.
    route = _one(spans, "loom-serve", "llm.route")
    assert route.parent_id == iteration.span_id
    assert chat.parent_id == route.span_id
    assert chat.trace_id == process.trace_id
    assert chat.attributes["gen_ai.request.model"] == "scripted-model"


async def test_loom_run_exports_its_agents_traces_by_its_flag(tmp_path: Path) -> None:
    # loom run --otlp-endpoint: each agent process exports, named by its agent id.
    publisher = _write(tmp_path, "publisher_agent.py", PUBLISHER)

    def sent(spans: list[ExportedSpan]) -> bool:
        return ("publisher", "jobs.new publish") in {(s.service, s.name) for s in spans}

    with anyio.fail_after(60):
        async with otlp_receiver() as receiver, loom_serve(tmp_path) as (_server, address):
            argv = [*LOOM, "run", str(publisher), "--address", address]
            argv += ["--otlp-endpoint", receiver.endpoint]
            async with running_argv(argv, cwd=tmp_path, env=_env(address)) as run:
                await run.wait_for(r"\[publisher\] .*published")
                spans = await receiver.wait_until(sent, timeout=30)
                assert await run.stop(signal.SIGTERM) == 0
    span = _one(spans, "publisher", "jobs.new publish")
    assert span.kind == "PRODUCER"
    assert span.parent_id == ""
