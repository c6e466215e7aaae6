"""Real A2A agents for the client's tests: the a2a-sdk's own server (its request handler,
task store and JSON-RPC routes) on uvicorn, on 127.0.0.1:0, each with an executor of ours."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import uvicorn
from a2a.helpers import new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.context import ServerCallContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandlerV2
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    GetTaskRequest,
    Message,
    Part,
    Role,
    Task,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


class _Updater:
    """A task of the request, made and announced if it is new."""

    @staticmethod
    async def start(context: RequestContext, queue: EventQueue) -> TaskUpdater:
        task = context.current_task
        if task is None:
            assert context.message is not None
            task = new_task_from_user_message(context.message)
            await queue.enqueue_event(task)
        return TaskUpdater(queue, task.id, task.context_id)


class EchoExecutor(AgentExecutor):
    """Answers ``echo: <text>`` as the task's one artifact; ``fail`` fails the task."""

    def __init__(self) -> None:
        self.seen: list[Message] = []

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.message is not None
        self.seen.append(context.message)
        text = context.get_user_input()
        updater = await _Updater.start(context, event_queue)
        if text == "fail":
            await updater.failed(updater.new_agent_message([new_text_part("it went wrong")]))
            return
        if text == "ask":
            await updater.requires_input(updater.new_agent_message([new_text_part("which city?")]))
            return
        await updater.add_artifact([new_text_part(f"echo: {text}")], name="answer")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


class StreamExecutor(AgentExecutor):
    """Streams the words of the message back one by one (status and artifact chunks)."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        words = context.get_user_input().split()
        updater = await _Updater.start(context, event_queue)
        await updater.start_work(updater.new_agent_message([new_text_part("thinking… ")]))
        for i, word in enumerate(words):
            await updater.add_artifact(
                [new_text_part(word.upper() + " ")],
                artifact_id="words",
                append=i > 0,
                last_chunk=i == len(words) - 1,
            )
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        raise NotImplementedError


class HangExecutor(AgentExecutor):
    """Starts working and hangs until the task is cancelled; records the cancel.

    ``polled`` is set by the first ``tasks/get`` of its server: the caller knows the task."""

    def __init__(self) -> None:
        self.polled = anyio.Event()
        self.working = anyio.Event()
        self.cancelled = anyio.Event()
        self.cancelled_ids: list[str] = []

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = await _Updater.start(context, event_queue)
        await updater.start_work(updater.new_agent_message([new_text_part("on it")]))
        self.working.set()
        await anyio.sleep_forever()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None
        self.cancelled_ids.append(context.task_id)
        self.cancelled.set()
        updater = TaskUpdater(event_queue, context.task_id, context.context_id or "")
        await updater.cancel()


def agent_card(url: str, *, name: str, streaming: bool) -> AgentCard:
    return AgentCard(
        name=name,
        description=f"The test's {name} agent.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=streaming),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id=f"{name}-skill",
                name=f"{name} things",
                description=f"Does {name} things with the text it is given.",
                tags=[name],
                examples=[f"please {name} this"],
            )
        ],
    )


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve_http(app: Any, *, port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1:``port`` (0: a free one) in a task group; yields its URL."""
    sock = _bind(port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    try:
        async with anyio.create_task_group() as tg:
            await server.startup(sockets=[sock])
            stop = anyio.Event()

            async def run() -> None:
                await stop.wait()

            tg.start_soon(run)
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                stop.set()
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    server.should_exit = True
                    server.force_exit = True
                    await server.shutdown(sockets=[sock])
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def serve_a2a(
    executor: AgentExecutor,
    *,
    name: str = "echo",
    streaming: bool = True,
    token: str | None = None,
    headers_seen: list[dict[str, str]] | None = None,
    port: int = 0,
) -> AsyncIterator[str]:
    """An A2A agent with ``executor``; yields its base URL (card at the well-known path).

    With ``token``, every request without ``Authorization: Bearer <token>`` gets 401; with
    ``headers_seen``, each request's headers are appended to it.
    """
    sock_url: list[str] = []

    def card_for() -> AgentCard:
        return agent_card(sock_url[0] + "/", name=name, streaming=streaming)

    app = Starlette()
    async with serve_http(_AuthGate(app, token, headers_seen), port=port) as url:
        sock_url.append(url)
        card = card_for()
        handler = _Handler(agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card)
        for route in create_agent_card_routes(card) + create_jsonrpc_routes(handler, rpc_url="/"):
            app.router.routes.append(route)
        yield url


class _Handler(DefaultRequestHandlerV2):
    """The SDK's handler, telling a :class:`HangExecutor` when a task is first polled."""

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        executor = self.agent_executor
        if isinstance(executor, HangExecutor):
            executor.polled.set()
        task: Task | None = await super().on_get_task(params, context)
        return task


class _AuthGate:
    """ASGI middleware: 401 without the bearer token (when there is one); records headers."""

    def __init__(self, app: Any, token: str | None, seen: list[dict[str, str]] | None) -> None:
        self.app = app
        self.token = token
        self.seen = seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.seen is not None and scope["type"] == "http":
            self.seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        if self.token is not None and scope["type"] == "http":
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {self.token}".encode():
                await PlainTextResponse("unauthorized", status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def bad_card_app(body: Callable[[], Any]) -> Starlette:
    """An HTTP server whose agent card is ``body()`` (JSON), or not JSON when it is bytes."""

    async def card(request: Request) -> Any:
        value = body()
        if isinstance(value, bytes):
            return PlainTextResponse(value)
        return JSONResponse(value)

    return Starlette(routes=[Route("/.well-known/agent-card.json", card)])


__all__ = [
    "EchoExecutor",
    "HangExecutor",
    "Part",
    "Role",
    "StreamExecutor",
    "bad_card_app",
    "serve_a2a",
    "serve_http",
]
