"""What does Loom's A2A server add to an ``a2a-sdk`` server?

``message/send`` (JSON-RPC ``SendMessage``, a new task each time) over real HTTP on 127.0.0.1,
one request at a time, to:

* ``loom``: a trivial agent (it replies with the payload) exposed by ``loom.web``'s A2A server
  on the HTTP port, as ``loom serve`` does: the message goes through the bus to the agent's
  mailbox, the reply comes back through it; the task is stored in SQLite;
* ``bare``: the ``a2a-sdk``'s own server (its request handler and JSON-RPC route in a
  Starlette app under uvicorn) with a trivial executor making the same updates (submitted,
  working, an artifact, completed) and the same SQLite task store (WAL, as Loom's);
* ``bare_memory`` (for reference): the bare server with the SDK's in-memory task store.

``ratio`` is ``loom_p50_ms / bare_p50_ms``; target (issue 15): <= 1.5. The runs alternate in
one process, each figure the best p50 of ``LOOM_BENCH_REPEATS`` runs of ``LOOM_BENCH_A2A_N``.
On a shared machine the wall time is mostly SQLite's commits waiting for the disk, so the
line also gives the process's CPU time per request (client and server, both in this process)
and its ratio, ``cpu_ratio``: what Loom's path costs in work, whatever the disk does.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's folder comes first on the path, where this module's own name
# would hide the a2a-sdk's ``a2a`` package: the repository's root replaces it.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn
from a2a.helpers import new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_jsonrpc_routes
from a2a.server.tasks import DatabaseTaskStore, InMemoryTaskStore, TaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette

from benchmarks._util import emit
from loom import Agent, Context
from loom.runtime import AgentRuntime, Event, EventBus
from loom.web import A2AAgent, A2AServer, HttpServer

N = int(os.environ.get("LOOM_BENCH_A2A_N", "100"))
REPEATS = int(os.environ.get("LOOM_BENCH_REPEATS", "3"))
WARMUP = 20


class _Trivial(AgentExecutor):
    """The bare server's agent: the same updates Loom's executor makes for an answer."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = context.task_id or "", context.context_id or ""
        history = [context.message] if context.message is not None else []
        await event_queue.enqueue_event(
            new_task(task_id, context_id, TaskState.TASK_STATE_SUBMITTED, history=history)
        )
        updater = TaskUpdater(event_queue, task_id, context_id)
        await updater.start_work()
        text = context.get_user_input()
        await updater.add_artifact([new_text_part(text)], name="answer", last_chunk=True)
        await updater.complete(updater.new_agent_message([new_text_part(text)]))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


def _wal(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _card() -> AgentCard:
    return AgentCard(
        name="echo",
        description="echo",
        version="1",
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[AgentSkill(id="echo", name="echo", description="echo", tags=["echo"])],
        supported_interfaces=[
            AgentInterface(url="/", protocol_binding="JSONRPC", protocol_version="1.0")
        ],
    )


@asynccontextmanager
async def _bare(store: TaskStore) -> AsyncIterator[str]:
    handler = DefaultRequestHandler(agent_executor=_Trivial(), task_store=store, agent_card=_card())
    app = Starlette(routes=create_jsonrpc_routes(handler, "/"))
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    # Bound and listening before uvicorn starts: a first request waits in the backlog.
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            server.should_exit = True
            await handler.aclose()


@asynccontextmanager
async def _loom(data_dir: Path) -> AsyncIterator[str]:
    async def echo(ctx: Context, topic: str, event: Event) -> None:
        await ctx.reply(event, event.payload)

    async with EventBus() as bus, AgentRuntime(bus) as runtime:
        await runtime.start(Agent("echo", topics=["bench.echo"], on_event=echo))
        a2a = A2AServer(runtime, [A2AAgent(agent_id="echo")], data_dir=data_dir)
        async with HttpServer(runtime, a2a=a2a) as http:
            yield f"{http.url}a2a/echo/"


def _request() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {
            "message": {
                "role": "ROLE_USER",
                "messageId": str(uuid.uuid4()),
                "parts": [{"text": "ping"}],
            }
        },
    }


async def _measure(http: httpx.AsyncClient, url: str) -> tuple[float, float]:
    """(p50 ms, CPU ms per request) of ``N`` sends after a warm-up."""
    latencies = []
    cpu0 = 0.0
    for i in range(WARMUP + N):
        if i == WARMUP:
            cpu0 = time.process_time()
        t0 = time.perf_counter()
        response = await http.post(url, json=_request(), headers={"A2A-Version": "1.0"})
        elapsed = time.perf_counter() - t0
        state = response.json()["result"]["task"]["status"]["state"]
        assert state == "TASK_STATE_COMPLETED", response.text
        if i >= WARMUP:
            latencies.append(elapsed)
    cpu_ms = (time.process_time() - cpu0) / N * 1000
    return statistics.median(latencies) * 1000, cpu_ms


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bare_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp}/bare.sqlite3")
        event.listen(bare_engine.sync_engine, "connect", _wal)  # as Loom's task files
        sqlite_store = DatabaseTaskStore(bare_engine)
        await sqlite_store.initialize()
        best = {"loom": float("inf"), "bare": float("inf"), "bare_memory": float("inf")}
        cpu = dict(best)
        async with (
            httpx.AsyncClient(timeout=30) as http,
            _loom(Path(tmp)) as loom_url,
            _bare(sqlite_store) as bare_url,
            _bare(InMemoryTaskStore()) as memory_url,
        ):
            for _ in range(REPEATS):
                for name, url in (
                    ("loom", loom_url),
                    ("bare", bare_url),
                    ("bare_memory", memory_url),
                ):
                    p50, cpu_ms = await _measure(http, url)
                    best[name] = min(best[name], p50)
                    cpu[name] = min(cpu[name], cpu_ms)
        await bare_engine.dispose()
    emit(
        "a2a",
        {
            "send_p50_ms_loom": round(best["loom"], 3),
            "send_p50_ms_bare_sdk": round(best["bare"], 3),
            "send_p50_ms_bare_sdk_memory_store": round(best["bare_memory"], 3),
            "ratio": round(best["loom"] / best["bare"], 3),
            "target_ratio": 1.5,
            "cpu_ms_per_send_loom": round(cpu["loom"], 3),
            "cpu_ms_per_send_bare_sdk": round(cpu["bare"], 3),
            "cpu_ms_per_send_bare_sdk_memory_store": round(cpu["bare_memory"], 3),
            "cpu_ratio": round(cpu["loom"] / cpu["bare"], 3),
            "n": N,
        },
    )


if __name__ == "__main__":
    anyio.run(main)
