"""Questions to the user in process: a turn's ``ask_user`` call waits in ``runtime.approvals``
and resumes with the answer as the call's result.

A real runtime, the scripted model over real HTTP, a real SQLite store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from loom import CognitiveAgent
from loom.runtime import (
    AgentRuntime,
    ApprovalAlreadyDecided,
    ApprovalNotFound,
    ApprovalRecord,
    Approvals,
    Envelope,
    Event,
    EventBus,
    InvalidArgument,
    LoomError,
    NotAQuestion,
    QuestionAlreadyAnswered,
    Subscription,
)
from loom.runtime.cognition import TurnOutcome
from loom.runtime.llm import LLM, OpenAIProvider, ProviderConfig
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

pytestmark = pytest.mark.anyio

WAIT = 10.0


def asks(question: str, id: str = "call_q") -> Reply:
    return Reply(
        tool_calls=[ScriptedToolCall(name="ask_user", arguments={"question": question}, id=id)]
    )


def provider_for(server: ScriptedLLMServer) -> OpenAIProvider:
    config = ProviderConfig(
        kind="openai", model="scripted-model", base_url=server.openai_base_url, timeout_s=5.0
    )
    return OpenAIProvider("scripted", config)


def agent_for(llm: LLM, tmp_path: Path, **kw: Any) -> CognitiveAgent:
    return CognitiveAgent(
        "helper", llm=llm, topics=["ask.*"], ask_user=True, data_dir=tmp_path / "helper", **kw
    )


@asynccontextmanager
async def hosting(
    tmp_path: Path, agent: CognitiveAgent
) -> AsyncIterator[tuple[EventBus, Approvals]]:
    async with (
        EventBus() as bus,
        Approvals(Approvals.in_data_dir(tmp_path), bus=bus) as store,
        AgentRuntime(bus) as runtime,
    ):
        runtime.approvals = store
        await runtime.start(agent)
        yield bus, store


async def next_of(sub: Subscription, type: str) -> Event:
    with anyio.fail_after(WAIT):
        while True:
            delivery = await sub.receive()
            if delivery.event.type == type:
                return delivery.event


def ask(text: str, *, thread: str = "c1") -> Event:
    return Event(
        type="ask", payload=text.encode(), envelope=Envelope(thread_id=thread, reply_to="t.out")
    )


def tool_content(server: ScriptedLLMServer) -> str:
    return str(next(m for m in server.requests[-1].messages if m["role"] == "tool")["content"])


async def test_the_model_asks_and_reads_the_answer(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(asks("Which city?"), Reply(text="Booked for Lyon."))
        async with (
            hosting(tmp_path, agent_for(llm, tmp_path)) as (bus, store),
            bus.subscribe("t.out") as answers,
            bus.subscribe("agent.helper.stream") as stream,
            bus.subscribe("input.>") as announced,
        ):
            await bus.publish("ask.x", ask("book me a train"))
            end = msgspec.json.decode((await next_of(stream, "turn.end")).payload, type=TurnOutcome)
            assert end.kind == "waiting_approval"
            assert "question(s) wait for the user's answer" in end.error
            requested = msgspec.json.decode(
                (await next_of(announced, "input.requested")).payload, type=ApprovalRecord
            )
            assert (requested.kind, requested.tool) == ("question", "ask_user")
            assert requested.arguments == {"question": "Which city?"}
            assert list(end.approval_ids) == [requested.id]
            answered = await store.answer(requested.id[:8], "Lyon", by="test")
            assert (answered.status, answered.note) == ("answered", "Lyon")
            reply = await next_of(answers, "agent.answer")
            settled = await next_of(announced, "input.answered")
            assert settled.metadata["status"] == "answered"
            with pytest.raises(QuestionAlreadyAnswered, match="already answered by test"):
                await store.answer(requested.id, "Paris")
            with pytest.raises(NotAQuestion):
                await store.approve(requested.id)
            stats = store.statistics()
            assert (stats.answered, stats.approved, stats.pending) == (1, 0, 0)
        assert tool_content(server) == "Lyon"
        offered = [t["function"]["name"] for t in server.requests[0].tools]
        assert "ask_user" in offered
    assert reply.payload == b"Booked for Lyon."


async def test_a_question_nobody_answers_expires_into_a_result(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(asks("Which city?"), Reply(text="I'll pick Paris."))
        agent = agent_for(llm, tmp_path, ask_user_timeout_s=0.3)
        async with hosting(tmp_path, agent) as (bus, store), bus.subscribe("t.out") as answers:
            await bus.publish("ask.x", ask("book me a train"))
            reply = await next_of(answers, "agent.answer")
            (record,) = await store.list(status=None)
    assert reply.payload == b"I'll pick Paris."
    assert (record.kind, record.status, record.decided_by) == ("question", "expired", "timeout")
    assert "did not answer in time" in tool_content(server)


async def test_deny_withdraws_a_question(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(asks("Your card number?"), Reply(text="Fine, no card."))
        async with (
            hosting(tmp_path, agent_for(llm, tmp_path)) as (bus, store),
            bus.subscribe("t.out") as answers,
            bus.subscribe("input.requested") as requested,
        ):
            await bus.publish("ask.x", ask("pay"))
            record = msgspec.json.decode(
                (await next_of(requested, "input.requested")).payload, type=ApprovalRecord
            )
            await store.deny(record.id, note="not over chat")
            reply = await next_of(answers, "agent.answer")
    assert reply.payload == b"Fine, no card."
    assert "declined to answer (not over chat)" in tool_content(server)


async def test_unknown_ids_and_approvals_are_refused_typed(tmp_path: Path) -> None:
    async with Approvals(tmp_path / "a.sqlite3") as store:
        with pytest.raises(ApprovalNotFound):
            await store.answer("nope-nope", "x")
        rec = await store.request(
            agent_id="a", thread_id="t", turn_id="e1", call_id="c1", tool="x", arguments={}
        )
        with pytest.raises(NotAQuestion, match="not a question: approve or deny it"):
            await store.answer(rec.id, "yes")
        await store.approve(rec.id)
        with pytest.raises(ApprovalAlreadyDecided):
            await store.deny(rec.id)


async def test_a_file_from_before_questions_opens_with_its_records_as_approvals(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE approvals (id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, thread_id TEXT "
        "NOT NULL, turn_id TEXT NOT NULL, call_id TEXT NOT NULL, tool TEXT NOT NULL, arguments "
        "TEXT NOT NULL, status TEXT NOT NULL, note TEXT NOT NULL DEFAULT '', decided_by TEXT NOT "
        "NULL DEFAULT '', created_ms INTEGER NOT NULL, deadline_ms INTEGER NOT NULL, decided_ms "
        "INTEGER NOT NULL DEFAULT 0, resumed INTEGER NOT NULL DEFAULT 0, state BLOB NOT NULL "
        "DEFAULT X'', UNIQUE (agent_id, turn_id, call_id))"
    )
    conn.execute(
        "INSERT INTO approvals (id, agent_id, thread_id, turn_id, call_id, tool, arguments, "
        "status, created_ms, deadline_ms) VALUES ('old1', 'a', 't', 'e', 'c', 'x', '{}', "
        "'pending', 1, 4000000000000)"
    )
    conn.commit()
    conn.close()
    async with Approvals(path) as store:
        (rec,) = await store.list()
        assert rec.kind == "approval"
        with pytest.raises(InvalidArgument):
            await store.request(
                agent_id="a", thread_id="t", turn_id="e2", call_id="c", tool="x",
                arguments={}, timeout_s=0, kind="question",
            )  # fmt: skip


async def test_ask_user_needs_an_approvals_store(tmp_path: Path) -> None:
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        agent = agent_for(llm, tmp_path)
        async with EventBus() as bus, AgentRuntime(bus) as runtime:
            with pytest.raises(LoomError, match="ask_user=True"):
                await runtime.start(agent)


async def test_a_turn_that_waits_twice_resumes_from_its_second_step(tmp_path: Path) -> None:
    """The second wait of one turn resumes from the step it stopped at, not the first one."""
    async with ScriptedLLMServer() as server, provider_for(server) as llm:
        server.push(asks("Which city?", "q1"), asks("Which day?", "q2"), Reply(text="Booked."))
        async with (
            hosting(tmp_path, agent_for(llm, tmp_path)) as (bus, store),
            bus.subscribe("t.out") as answers,
            bus.subscribe("input.requested") as requested,
        ):
            await bus.publish("ask.x", ask("book me a train"))
            for answer in ("Lyon", "Friday"):
                record = msgspec.json.decode(
                    (await next_of(requested, "input.requested")).payload, type=ApprovalRecord
                )
                await store.answer(record.id, answer)
            reply = await next_of(answers, "agent.answer")
    assert reply.payload == b"Booked."
    said = [m["content"] for m in server.requests[-1].messages if m["role"] == "tool"]
    assert said == ["Lyon", "Friday"]
    assert len(server.requests) == 3
