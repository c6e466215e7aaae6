"""What ``A2AServer`` (``_a2a.py``) runs on: the ``a2a-sdk``'s request handler, routes and
SQLite task store for each exposed agent. Imported only when a server exposes agents, so a
``loom`` command that does not pays nothing for the SDK (pydantic, SQLAlchemy, its protobuf
types).

The ``a2a-sdk``'s packages import ``grpc`` themselves (``a2a.server.request_handlers`` tries
its optional gRPC handler when ``grpcio`` is installed, which Loom requires): this module
never uses it, and the import arrows (tests/test_architecture.py) are about Loom's own imports.
The SDK's types are protobuf messages; they stay in this module and ``_a2a_executor.py``.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import msgspec
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import DatabaseTaskStore
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    CancelTaskRequest,
    HTTPAuthSecurityScheme,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SecurityRequirement,
    SecurityScheme,
    SendMessageConfiguration,
    SendMessageRequest,
    StringList,
    Task,
    TaskState,
)
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from loom.runtime import AgentCard as LoomCard
from loom.runtime import AgentRuntime, ApprovalRecord, Approvals

from ._a2a_agent import A2AAgent, CancelTurn
from ._a2a_approval import UNSEEN_TEXT, WAKE_KEY, Parked, parked_from
from ._a2a_executor import LoomExecutor
from ._auth import Auth

__all__ = ["SdkEndpoints"]

log = logging.getLogger("loom.web.a2a")

_CARD_PATH = "/.well-known/agent-card.json"
_FILE_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _version() -> str:
    try:
        return metadata.version("loom-runtime")
    except metadata.PackageNotFoundError:  # a source tree run without installing
        return "0"


def _wal(connection: Any, _record: Any) -> None:
    """Each connection to a task file: WAL, synced at checkpoints (as ``memory.sqlite3``): a
    commit survives the process's death; a power cut may lose the last ones."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class _Exposed:
    """One agent's executor, task store and request handler."""

    def __init__(
        self,
        runtime: AgentRuntime,
        agent: A2AAgent,
        engine: AsyncEngine,
        cancel_turn: CancelTurn | None,
    ) -> None:
        self.agent = agent
        self.engine = engine
        self.store = DatabaseTaskStore(engine)
        self.executor = LoomExecutor(
            runtime.bus,
            agent.agent_id,
            stream_topic=_stream_topic(agent),
            cancel_turn=cancel_turn,
            approvals=lambda: runtime.approvals,
        )
        self.base_card = AgentCard()
        # Its skills were declared (a card's): the capabilities it offers do not replace them.
        self.declared_skills = False
        self.set_card(agent)
        self.handler = _CancellingHandler(
            agent_executor=self.executor, task_store=self.store, agent_card=self.base_card
        )
        self.app: ASGIApp | None = None  # its routes, made at its first request

    def set_card(self, agent: A2AAgent) -> None:
        """Describe the agent as ``agent`` says: its card's fields where set, else the
        configured description, else the defaults. In place: the handler holds this card."""
        self.agent = agent
        code = agent.card if agent.card is not None else LoomCard()
        agent_id = agent.agent_id
        description = code.description or agent.description
        skills = [
            AgentSkill(
                id=k.id,
                name=k.name or k.id,
                description=k.description,
                tags=list(k.tags) or ["loom"],
                examples=list(k.examples),
            )
            for k in code.skills
        ]
        self.declared_skills = bool(skills)
        card = AgentCard(
            name=code.name or agent_id,
            description=description or f"Loom agent {agent_id}",
            version=code.version or _version(),
            capabilities=AgentCapabilities(streaming=True, push_notifications=False),
            default_input_modes=["text/plain"],
            default_output_modes=["text/plain", "application/json"],
            skills=skills or [_chat_skill(agent_id, description)],
            # Served with absolute URLs (see A2AServer.card); the handler wants one to start.
            supported_interfaces=[
                AgentInterface(
                    url=f"/a2a/{agent_id}/",
                    protocol_binding="JSONRPC",
                    protocol_version="1.0",
                )
            ],
        )
        self.base_card.CopyFrom(card)
        self.executor.stream_topic = _stream_topic(agent)


class _CancellingHandler(DefaultRequestHandler):
    """The SDK's handler, whose ``tasks/cancel`` first cancels the task's turn: one that
    cannot be cancelled refuses the request (``TaskNotCancelableError``) with the task left
    as it is. (Raised from the executor's ``cancel``, the SDK would mark the task failed.)"""

    def __init__(
        self, *, agent_executor: LoomExecutor, task_store: DatabaseTaskStore, agent_card: AgentCard
    ) -> None:
        super().__init__(
            agent_executor=agent_executor, task_store=task_store, agent_card=agent_card
        )
        self.loom_executor = agent_executor
        self.loom_store = task_store

    async def on_cancel_task(
        self, params: CancelTaskRequest, context: ServerCallContext
    ) -> Task | None:
        task = await self.loom_store.get(params.id, context)
        if task is None or task.status.state in _TERMINAL:
            result: Task | None = await super().on_cancel_task(params, context)
            return result
        self.loom_executor.cancel_turn_of(task.id, task.context_id)
        try:
            result = await super().on_cancel_task(params, context)
        finally:
            # Whether or not the SDK reached the executor's cancel (which reads this).
            self.loom_executor.turn_cancel_done(task.id)
        return result


_TERMINAL = (
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_REJECTED,
)


def _stream_topic(agent: A2AAgent) -> str:
    code = agent.card.stream_topic if agent.card is not None else ""
    return code or agent.stream_topic or f"agent.{agent.agent_id}.stream"


def _chat_skill(agent_id: str, description: str) -> AgentSkill:
    return AgentSkill(
        id="message",
        name=agent_id,
        description=description or f"Send a text message to Loom agent {agent_id}",
        tags=["loom"],
    )


_WAKES = 1024
_ORPHAN_PAGE = 100
_ORPHAN_TEXT = "loom serve stopped before this task ended; send the message again"


async def _fail_orphans(store: DatabaseTaskStore) -> int:
    """Mark ``failed`` the tasks a previous process left ``submitted`` or ``working``: no
    one follows them any more (their turns, if they ran on, were never seen)."""
    context = ServerCallContext()  # the owner the tasks were stored under (no user)
    failed = 0
    for state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING):
        # Each page's tasks leave the state listed, so the next page starts afresh; bounded
        # all the same, should a save not take.
        for _ in range(10_000):
            page = await store.list(
                ListTasksRequest(status=state, page_size=_ORPHAN_PAGE, include_artifacts=True),
                context,
            )
            for task in page.tasks:
                task.status.state = TaskState.TASK_STATE_FAILED
                task.status.message.CopyFrom(
                    Message(
                        role=Role.ROLE_AGENT,
                        message_id=str(uuid.uuid4()),
                        task_id=task.id,
                        context_id=task.context_id,
                        parts=[Part(text=_ORPHAN_TEXT)],
                    )
                )
                task.status.timestamp.GetCurrentTime()
                await store.save(task, context)
                failed += 1
            if len(page.tasks) < _ORPHAN_PAGE:
                break
    return failed


async def _repark(exposed: _Exposed, approvals: Approvals) -> tuple[int, int]:
    """After a restart: the tasks left ``input-required`` on approvals wait again (a decision
    made elsewhere moves them on); those whose approvals were all decided while no server
    followed them are ``failed`` (their turns went on unseen). Returns (waiting, failed)."""
    context = ServerCallContext()
    waiting = failed = 0
    token = ""
    for _ in range(10_000):  # bounded, should a page token not advance
        page = await exposed.store.list(
            ListTasksRequest(
                status=TaskState.TASK_STATE_INPUT_REQUIRED,
                page_size=_ORPHAN_PAGE,
                page_token=token,
                include_artifacts=True,
            ),
            context,
        )
        for task in page.tasks:
            parked = parked_from(task.id, task.context_id, task.status.message)
            if parked is None:
                continue
            records = [await approvals.get(i) for i in sorted(parked.pending)]
            parked.pending = {r.id for r in records if r.status == "pending"}
            if parked.pending:
                parked.ready = True
                exposed.executor.hold(parked)
                waiting += 1
                continue
            task.status.state = TaskState.TASK_STATE_FAILED
            task.status.message.CopyFrom(
                Message(
                    role=Role.ROLE_AGENT,
                    message_id=str(uuid.uuid4()),
                    task_id=task.id,
                    context_id=task.context_id,
                    parts=[Part(text=UNSEEN_TEXT)],
                )
            )
            task.status.timestamp.GetCurrentTime()
            await exposed.store.save(task, context)
            failed += 1
        token = page.next_page_token
        if not token:
            break
    return waiting, failed


class _Guard:
    """Lets through only requests that carry the server's token (or session cookie); the
    others get 401 with ``WWW-Authenticate: Bearer``, before the SDK reads a byte."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.auth.allows(HTTPConnection(scope)):
            response = JSONResponse(
                {"error": "unauthenticated: send Authorization: Bearer <the server's token>"},
                401,
                headers={"www-authenticate": 'Bearer realm="loom"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class SdkEndpoints:
    """What :class:`~loom.web.A2AServer` does, with the SDK loaded (its arguments and
    methods are documented there; that class only defers this module's import, and routes
    each request to the agent's app here)."""

    def __init__(
        self,
        runtime: AgentRuntime,
        agents: Sequence[A2AAgent],
        *,
        data_dir: str | Path,
        cancel_turn: CancelTurn | None = None,
    ) -> None:
        self.runtime = runtime
        self.directory = Path(data_dir) / "a2a"
        self.cancel_turn = cancel_turn
        self._configured = {agent.agent_id: agent for agent in agents}
        self._exposed: dict[str, _Exposed] = {}
        for agent in agents:
            self._exposed[agent.agent_id] = self._make(agent)
        # Tasks whose approvals were decided elsewhere, to run an execution of (bounded: a
        # wake that does not fit is logged, and that task is moved on by its next message);
        # opened with the endpoints.
        self._wakes: MemoryObjectSendStream[tuple[str, Parked, str]] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._approvals: Approvals | None = None

    def _make(self, agent: A2AAgent) -> _Exposed:
        path = self.directory / f"{_FILE_SAFE.sub('_', agent.agent_id)}.sqlite3"
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        event.listen(engine.sync_engine, "connect", _wal)
        return _Exposed(self.runtime, agent, engine, self.cancel_turn)

    @property
    def agents(self) -> tuple[str, ...]:
        """The exposed agents' ids: the configured ones in order, then those exposed since."""
        return tuple(self._exposed)

    def card(self, agent_id: str, url: str, *, bearer: bool) -> AgentCard:
        """Agent ``agent_id``'s card as served now: its interfaces at ``url`` (the agent's
        root, ``.../a2a/{id}/``), its declared skills or one per capability it offers (else
        one "message" skill), and the bearer scheme when the port needs a token."""
        exposed = self._exposed[agent_id]
        card = AgentCard()
        card.CopyFrom(exposed.base_card)
        del card.supported_interfaces[:]
        card.supported_interfaces.extend(
            [
                AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0"),
                AgentInterface(
                    url=url + "rest", protocol_binding="HTTP+JSON", protocol_version="1.0"
                ),
            ]
        )
        tools = self.runtime.capabilities_of(agent_id) if not exposed.declared_skills else []
        if tools:
            del card.skills[:]
            card.skills.extend(
                AgentSkill(id=t.name, name=t.name, description=t.description, tags=["loom"])
                for t in tools
            )
        if bearer:
            card.security_schemes["bearer"].CopyFrom(
                SecurityScheme(
                    http_auth_security_scheme=HTTPAuthSecurityScheme(
                        scheme="bearer", description="the token of loom serve"
                    )
                )
            )
            card.security_requirements.append(SecurityRequirement(schemes={"bearer": StringList()}))
        return card

    def card_response(self, agent_id: str, request: Request, *, bearer: bool) -> Response:
        """The card of ``agent_id`` as JSON, its URLs those of ``request``'s host."""
        root = str(request.url.replace(path=f"/a2a/{agent_id}/", query=""))
        return JSONResponse(agent_card_to_dict(self.card(agent_id, root, bearer=bearer)))

    def app(self, agent_id: str, auth: Auth) -> ASGIApp | None:
        """The ASGI app of ``/a2a/{agent_id}/`` (``None``: not exposed now): its card, open
        to all, and behind ``auth`` the SDK's JSON-RPC and REST routes."""
        exposed = self._exposed.get(agent_id)
        if exposed is None:
            return None
        if exposed.app is None:

            async def card(request: Request) -> Response:
                return self.card_response(agent_id, request, bearer=auth.required)

            guarded = Starlette(
                routes=[
                    *create_jsonrpc_routes(exposed.handler, "/"),
                    Mount("/rest", routes=create_rest_routes(exposed.handler)),
                ]
            )
            exposed.app = Router(
                routes=[
                    Route(_CARD_PATH, card, methods=["GET"]),
                    Mount("", app=_Guard(guarded, auth)),
                ]
            )
        return exposed.app

    async def __aenter__(self) -> SdkEndpoints:
        await anyio.Path(self.directory).mkdir(parents=True, exist_ok=True)
        self._approvals = self.runtime.approvals
        for exposed in self._exposed.values():
            await self._open(exposed)
        log.info("A2A: exposing %s", ", ".join(self._exposed) or "no agent")
        self._wakes, wake_rx = anyio.create_memory_object_stream[tuple[str, Parked, str]](_WAKES)
        self._tg = await anyio.create_task_group().__aenter__()
        self._tg.start_soon(self._wake_loop, wake_rx)
        return self

    async def _open(self, exposed: _Exposed) -> None:
        """Open one agent's store: fail the tasks a previous life left running, and wait
        again on the approvals of those left ``input-required``."""
        agent_id = exposed.agent.agent_id
        await exposed.store.initialize()  # a broken file fails the start, not a request
        orphans = await _fail_orphans(exposed.store)
        if orphans:
            log.warning(
                "A2A: %d task(s) of %s were running when the server last stopped "
                "(or the agent last left): failed",
                orphans,
                agent_id,
            )
        approvals = self._approvals
        if approvals is None:
            return
        exposed.executor.on_wake = self._waker(agent_id)
        approvals.add_listener(exposed.executor.on_approval)
        waiting, failed = await _repark(exposed, approvals)
        if waiting or failed:
            log.warning(
                "A2A: %d task(s) of %s wait for approvals again; %d whose approvals "
                "were decided while the server was down: failed",
                waiting,
                agent_id,
                failed,
            )

    async def expose(self, agent: A2AAgent) -> None:
        """Serve ``agent`` from now on (an agent that connected with its card); an agent
        exposed already takes the card (a configured one: over its table's values)."""
        exposed = self._exposed.get(agent.agent_id)
        if exposed is not None:
            configured = self._configured.get(agent.agent_id)
            if configured is not None and agent.card is not None:
                agent = msgspec.structs.replace(configured, card=agent.card)
            exposed.set_card(agent)
            return
        exposed = self._make(agent)
        try:
            await self._open(exposed)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await exposed.engine.dispose()
            raise
        self._exposed[agent.agent_id] = exposed
        log.info("A2A: exposing %s (connected with its card)", agent.agent_id)

    async def withdraw(self, agent_id: str) -> None:
        """Stop serving ``agent_id`` (it left): its URLs answer 404 from now on, the
        streams of its tasks in flight end (those tasks are failed when it comes back). A
        configured agent stays, with its configured card."""
        configured = self._configured.get(agent_id)
        exposed = self._exposed.get(agent_id)
        if exposed is None:
            return
        if configured is not None:
            exposed.set_card(configured)
            return
        del self._exposed[agent_id]
        log.info("A2A: %s left: no longer exposed", agent_id)
        await self._close(exposed)

    async def _close(self, exposed: _Exposed) -> None:
        if self._approvals is not None:
            self._approvals.remove_listener(exposed.executor.on_approval)
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await exposed.handler.aclose()
            await exposed.engine.dispose()

    def _waker(self, agent_id: str) -> Callable[[Parked, ApprovalRecord], None]:
        def wake(parked: Parked, record: ApprovalRecord) -> None:
            note = f" ({record.note})" if record.note else ""
            what = "question" if record.kind == "question" else "approval"
            text = f"{what} {record.id} {record.status} by {record.decided_by}{note}"
            try:
                if self._wakes is None:
                    raise anyio.WouldBlock  # closing
                self._wakes.send_nowait((agent_id, parked, text))
            except (anyio.WouldBlock, anyio.ClosedResourceError):
                log.warning("A2A task %s: too many wakes at once; not followed", parked.task_id)
                if parked.sub is not None:
                    parked.sub.close()

        return wake

    async def _wake_loop(self, wake_rx: MemoryObjectReceiveStream[tuple[str, Parked, str]]) -> None:
        """Run an execution of each task whose approvals were decided elsewhere: the SDK's
        own path for a task's next message (a resubscribed client sees its updates)."""
        async with wake_rx:
            async for agent_id, parked, text in wake_rx:
                await self._wake(agent_id, parked, text)

    async def _wake(self, agent_id: str, parked: Parked, text: str) -> None:
        """One execution of the task, through the SDK's path for its next message."""
        message = Message(
            role=Role.ROLE_USER,
            message_id=str(uuid.uuid4()),
            task_id=parked.task_id,
            context_id=parked.context_id,
            parts=[Part(text=text)],
        )
        message.metadata.update({WAKE_KEY: True})
        request = SendMessageRequest(
            message=message, configuration=SendMessageConfiguration(return_immediately=True)
        )
        try:
            await self._exposed[agent_id].handler.on_message_send(request, ServerCallContext())
        except Exception as exc:  # the task ended meanwhile (cancelled, answered)
            log.info("A2A task %s: not moved on after %s: %r", parked.task_id, text, exc)
            if parked.sub is not None:
                parked.sub.close()

    async def end_streams(self) -> None:
        """Stop following the tasks in flight, which ends their open streams (the HTTP
        server does this before its shutdown, which would otherwise wait its whole grace on
        them). Their tasks keep the state last stored (``working``): their agents' turns may
        finish unseen."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            for exposed in list(self._exposed.values()):
                await exposed.handler.aclose()

    async def aclose(self) -> None:
        """:meth:`end_streams`, then close the stores."""
        approvals, self._approvals = self._approvals, None
        if approvals is not None:
            for exposed in self._exposed.values():
                approvals.remove_listener(exposed.executor.on_approval)
        wakes, self._wakes = self._wakes, None
        if wakes is not None:
            wakes.close()
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        await self.end_streams()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            for exposed in list(self._exposed.values()):
                await exposed.engine.dispose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
