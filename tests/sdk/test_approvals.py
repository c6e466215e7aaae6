"""Human approval in process: ``runtime.approvals`` answers a waiting turn; the effect journal.

A real runtime, the scripted model over real HTTP, real SQLite files. The tool appends a line
to a file, so "ran once" is a line count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from loom import Agent, CognitiveAgent
from loom.runtime import (
    AgentRuntime,
    ApprovalAlreadyDecided,
    ApprovalCall,
    ApprovalChange,
    ApprovalNotFound,
    ApprovalRecord,
    Approvals,
    Envelope,
    Event,
    EventBus,
    InvalidArgument,
    Subscription,
)
from loom.runtime.cognition import TurnOutcome
from loom.runtime.llm import LLM, OpenAIProvider, ProviderConfig
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall
from loom.runtime.tools import EffectInterrupted, EffectJournal, FunctionTool, ToolFailed

pytestmark = pytest.mark.anyio

WAIT = 10.0


def append_tool(path: Path) -> FunctionTool:
    async def append(line: str) -> str:
        with path.open("a") as f:
            f.write(line + "\n")
        return f"appended {line}"

    return FunctionTool(
        append,
        name="file.append",
        description="Append a line to the file.",
        parameters_schema={"type": "object", "properties": {"line": {"type": "string"}}},
    )


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def call_append(line: str, id: str = "call_1") -> Reply:
    return Reply(tool_calls=[ScriptedToolCall(name="file_append", arguments={"line": line}, id=id)])


def provider_for(server: ScriptedLLMServer) -> OpenAIProvider:
    config = ProviderConfig(
        kind="openai", model="scripted-model", base_url=server.openai_base_url, timeout_s=5.0
    )
    return OpenAIProvider("scripted", config)


@asynccontextmanager
async def hosting(
    tmp_path: Path, *agents: Agent, timeout_s: float = 3600.0
) -> AsyncIterator[tuple[EventBus, AgentRuntime, Approvals]]:
    async with (
        EventBus() as bus,
        Approvals(Approvals.in_data_dir(tmp_path), bus=bus, default_timeout_s=timeout_s) as store,
        AgentRuntime(bus) as runtime,
    ):
        runtime.approvals = store
        for agent in agents:
            await runtime.start(agent)
        yield bus, runtime, store


async def next_of(sub: Subscription, type: str) -> Event:
    with anyio.fail_after(WAIT):
        while True:
            delivery = await sub.receive()
            if delivery.event.type == type:
                return delivery.event


def ask(text: str, *, thread: str = "c1") -> Event:
    return Event(
        type="ask",
        payload=text.encode(),
        envelope=Envelope(thread_id=thread, reply_to="test.answers"),
    )


def agent_for(llm: LLM, tmp_path: Path, target: Path, **kw: Any) -> CognitiveAgent:
    return CognitiveAgent(
        "writer",
        llm=llm,
        tools=[append_tool(target)],
        topics=["ask.*"],
        approval={"file.append": "always"},
        data_dir=tmp_path / "writer",
        journal=True,
        **kw,
    )


async def test_an_approved_call_runs_once_and_the_turn_answers(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    changes: list[ApprovalChange] = []
    resumed = anyio.Event()

    def listen(change: ApprovalChange) -> None:
        changes.append(change)
        if change.kind == "resumed":
            resumed.set()

    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(call_append("hello"), Reply(text="Written."))
        agent = agent_for(llm, tmp_path, target)
        async with (
            hosting(tmp_path, agent) as (bus, runtime, store),
            bus.subscribe("test.answers") as answers,
            bus.subscribe("agent.writer.stream") as stream,
            bus.subscribe("approval.>") as announced,
        ):
            store.add_listener(listen)
            question = ask("write hello")
            await bus.publish("ask.x", question)
            end = msgspec.json.decode((await next_of(stream, "turn.end")).payload, type=TurnOutcome)
            assert end.kind == "waiting_approval"
            requested = await next_of(announced, "approval.requested")
            pending = await runtime.approvals.list()  # type: ignore[union-attr]
            assert [p.id for p in pending] == list(end.approval_ids)
            record = pending[0]
            assert (record.agent_id, record.thread_id, record.tool) == (
                "writer",
                "c1",
                "file.append",
            )
            assert record.arguments == {"line": "hello"}
            assert record.turn_id == question.id  # the turn is named by its event
            assert requested.metadata["approval_id"] == record.id
            assert lines(target) == 0  # nothing runs before a human says so
            decided = await store.approve(record.id[:8], note="fine", by="test")
            assert decided.status == "approved"
            reply = await next_of(answers, "agent.answer")
            assert reply.payload == b"Written."
            with anyio.fail_after(WAIT):
                await resumed.wait()
            assert (await store.get(record.id)).resumed
            with pytest.raises(ApprovalAlreadyDecided):
                await store.deny(record.id)
    assert lines(target) == 1
    assert [c.kind for c in changes] == ["requested", "decided", "resumed"]
    assert store.statistics().approved == 1


async def test_a_denied_call_never_runs_and_the_model_reads_why(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(call_append("rm -rf"), Reply(text="Understood, not written."))
        agent = agent_for(llm, tmp_path, target)
        async with (
            hosting(tmp_path, agent) as (bus, _, store),
            bus.subscribe("test.answers") as answers,
            bus.subscribe("approval.requested") as requested,
        ):
            await bus.publish("ask.x", ask("write"))
            record = msgspec.json.decode(
                (await next_of(requested, "approval.requested")).payload, type=ApprovalRecord
            )
            await store.deny(record.id, note="not on a Friday")
            reply = await next_of(answers, "agent.answer")
        last = server.requests[-1].messages
    assert reply.payload == b"Understood, not written."
    tool_message = next(m for m in last if m["role"] == "tool")
    assert "denied by a human reviewer (not on a Friday)" in tool_message["content"]
    assert lines(target) == 0


async def test_a_timeout_denies(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(call_append("late"), Reply(text="Nobody answered."))
        agent = agent_for(llm, tmp_path, target, approval_timeout_s=0.3)
        async with (
            hosting(tmp_path, agent) as (bus, _, store),
            bus.subscribe("test.answers") as answers,
        ):
            await bus.publish("ask.x", ask("write"))
            reply = await next_of(answers, "agent.answer")
            (record,) = await store.list(status=None)
        last = server.requests[-1].messages
    assert reply.payload == b"Nobody answered."
    assert (record.status, record.decided_by) == ("expired", "timeout")
    assert "not approved in time" in next(m for m in last if m["role"] == "tool")["content"]
    assert lines(target) == 0


async def test_waiting_turns_hold_no_worker(tmp_path: Path) -> None:
    """One worker (max_concurrency=1), three turns waiting: a fourth event is still answered."""
    target = tmp_path / "out.txt"
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(call_append("a"), call_append("b"), call_append("c"), Reply(text="free"))
        agent = agent_for(llm, tmp_path, target, max_concurrency=1)
        async with (
            hosting(tmp_path, agent) as (bus, _, store),
            bus.subscribe("test.answers") as answers,
        ):
            for thread in ("t1", "t2", "t3"):
                await bus.publish("ask.x", ask("write", thread=thread))
            await bus.publish("ask.x", ask("just talk", thread="t4"))
            free = await next_of(answers, "agent.answer")
            assert free.envelope.thread_id == "t4"
            pending = await store.list()
            assert sorted(p.thread_id for p in pending) == ["t1", "t2", "t3"]
            server.push(Reply(text="ok1"), Reply(text="ok2"), Reply(text="ok3"))
            for record in pending:
                await store.approve(record.id)
            got = {(await next_of(answers, "agent.answer")).envelope.thread_id for _ in range(3)}
    assert got == {"t1", "t2", "t3"}
    assert lines(target) == 3


async def test_the_api_waits_and_checks(tmp_path: Path) -> None:
    async with EventBus() as bus, Approvals(tmp_path / "a.sqlite3", bus=bus) as store:
        rec = await store.request(
            agent_id="a", thread_id="t", turn_id="e1", call_id="c1", tool="x", arguments={}
        )
        again = await store.request(
            agent_id="a", thread_id="t", turn_id="e1", call_id="c1", tool="x", arguments={}
        )
        assert again.id == rec.id  # one record per call
        decided: list[ApprovalRecord] = []

        async def waiter() -> None:
            decided.append(await store.wait(rec.id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.lowlevel.checkpoint()
            await store.approve(rec.id)
        assert decided[0].status == "approved"
        with pytest.raises(ApprovalNotFound):
            await store.approve("nope-nope")
        with pytest.raises(InvalidArgument):
            await store.request(
                agent_id="a", thread_id="t", turn_id="e2", call_id="c", tool="x",
                arguments={}, timeout_s=0,
            )  # fmt: skip


async def test_a_callable_policy_decides_per_call(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"

    def risky(call: ApprovalCall) -> bool:
        return "secret" in str(call.arguments.get("line", ""))

    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(call_append("plain"), Reply(text="done plain"))
        agent = CognitiveAgent(
            "writer",
            llm=llm,
            tools=[append_tool(target)],
            topics=["ask.*"],
            approval={"file.append": risky},
        )
        async with (
            hosting(tmp_path, agent) as (bus, _, store),
            bus.subscribe("test.answers") as answers,
        ):
            await bus.publish("ask.x", ask("write"))
            assert (await next_of(answers, "agent.answer")).payload == b"done plain"
            assert await store.list(status=None) == []
    assert lines(target) == 1


async def test_the_journal_runs_a_key_once(tmp_path: Path) -> None:
    runs = 0

    async def effect() -> dict[str, int]:
        nonlocal runs
        runs += 1
        return {"n": runs}

    async def boom() -> None:
        raise ToolFailed("OSError", "disk full")

    path = EffectJournal.in_data_dir(tmp_path)
    async with await EffectJournal.open(path) as journal:
        assert await journal.run("k1", "t", effect) == {"n": 1}
        assert await journal.run("k1", "t", effect) == {"n": 1}  # replayed, not run
        with pytest.raises(ToolFailed):
            await journal.run("k2", "t", boom)
        with pytest.raises(ToolFailed, match="disk full"):
            await journal.run("k2", "t", effect)  # the recorded error, not a run
    # A crash between "started" and "done": the row stays started.
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO effects (key, tool, status, started_ms) VALUES ('k3', 't', 'started', 1)"
        )
    async with await EffectJournal.open(path) as journal:
        with pytest.raises(EffectInterrupted):
            await journal.run("k3", "t", effect)
        assert await journal.run("k1", "t", effect) == {"n": 1}
        assert journal.statistics().interrupted == 1
    assert runs == 1


async def test_a_resumed_turn_uses_the_journalled_result_of_a_call_that_ran(
    tmp_path: Path,
) -> None:
    """The state a crash leaves after the tool ran and was recorded done, before the step was
    in memory: the resumed turn answers the model from the journal and runs nothing."""
    target = tmp_path / "out.txt"
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(call_append("hello"), Reply(text="Done before."))
        agent = agent_for(llm, tmp_path, target)
        async with (
            hosting(tmp_path, agent) as (bus, _, store),
            bus.subscribe("test.answers") as answers,
            bus.subscribe("approval.requested") as requested,
        ):
            question = ask("write hello")
            await bus.publish("ask.x", question)
            record = msgspec.json.decode(
                (await next_of(requested, "approval.requested")).payload, type=ApprovalRecord
            )
            # What the first run wrote before the crash: started, then done with its result.
            journal_path = EffectJournal.in_data_dir(tmp_path / "writer")
            async with await EffectJournal.open(journal_path) as journal:

                async def ran_before() -> str:
                    return "appended hello (the first run)"

                key = f"writer/c1/{question.id}/call_1"
                await journal.run(key, "file.append", ran_before)
            await store.approve(record.id)
            reply = await next_of(answers, "agent.answer")
        last = server.requests[-1].messages
    assert reply.payload == b"Done before."
    tool_message = next(m for m in last if m["role"] == "tool")
    assert tool_message["content"] == "appended hello (the first run)"
    assert lines(target) == 0  # not run again


async def test_two_waiting_calls_of_one_step_resume_once_both_are_decided(
    tmp_path: Path,
) -> None:
    target = tmp_path / "out.txt"
    both = Reply(
        tool_calls=[
            ScriptedToolCall(name="file_append", arguments={"line": "a"}, id="c1"),
            ScriptedToolCall(name="file_append", arguments={"line": "b"}, id="c2"),
        ]
    )
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(both, Reply(text="One of two."))
        agent = agent_for(llm, tmp_path, target)
        async with (
            hosting(tmp_path, agent) as (bus, _, store),
            bus.subscribe("test.answers") as answers,
            bus.subscribe("agent.writer.stream") as stream,
        ):
            await bus.publish("ask.x", ask("write both"))
            end = msgspec.json.decode((await next_of(stream, "turn.end")).payload, type=TurnOutcome)
            first, second = end.approval_ids
            await store.approve(first)
            assert server.remaining == 1  # still waiting for the second decision
            await store.deny(second, note="only one")
            reply = await next_of(answers, "agent.answer")
        tools = [m for m in server.requests[-1].messages if m["role"] == "tool"]
    assert reply.payload == b"One of two."
    assert [t["tool_call_id"] for t in tools] == ["c1", "c2"]
    assert "denied by a human reviewer (only one)" in tools[1]["content"]
    assert target.read_text() == "a\n"


async def test_a_guarded_tool_runs_only_behind_a_gate(tmp_path: Path) -> None:
    from loom.runtime.tools import NeedsApproval, ToolPermissionDenied, ToolRegistry

    target = tmp_path / "out.txt"
    registry = ToolRegistry()
    registry.register(NeedsApproval(append_tool(target)))
    with pytest.raises(ToolPermissionDenied, match="waits for a human's approval"):
        await registry.call("file.append", {"line": "x"})
    assert lines(target) == 0
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(call_append("y"), Reply(text="ok"))
        agent = CognitiveAgent("writer", llm=llm, tools=registry, topics=["ask.*"])
        async with (
            hosting(tmp_path, agent) as (bus, _, store),
            bus.subscribe("test.answers") as answers,
        ):
            await bus.publish("ask.x", ask("write"))  # no approval needed by this agent
            assert (await next_of(answers, "agent.answer")).payload == b"ok"
            assert await store.list(status=None) == []
    assert lines(target) == 1


async def test_a_decision_made_while_the_agent_is_stopped_resumes_when_it_starts(
    tmp_path: Path,
) -> None:
    target = tmp_path / "out.txt"
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(call_append("later"), Reply(text="Done after the restart."))
        async with (
            hosting(tmp_path, agent_for(llm, tmp_path, target)) as (bus, runtime, store),
            bus.subscribe("test.answers") as answers,
            bus.subscribe("approval.requested") as requested,
        ):
            await bus.publish("ask.x", ask("write later"))
            record = msgspec.json.decode(
                (await next_of(requested, "approval.requested")).payload, type=ApprovalRecord
            )
            await runtime.delete("writer")
            await store.approve(record.id)  # nobody is there to resume it
            assert not (await store.get(record.id)).resumed
            # A new instance of the agent (a restart): it finds the decision and goes on.
            await runtime.start(agent_for(llm, tmp_path, target))
            reply = await next_of(answers, "agent.answer")
            assert reply.payload == b"Done after the restart."
    assert lines(target) == 1
