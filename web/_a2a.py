"""The A2A server of the HTTP port: chosen agents exposed over the Agent2Agent protocol (1.0),
with the official ``a2a-sdk``'s request handler, routes and SQLite task store.

The agents of ``[a2a] expose`` are served from the start; an agent connected through the
bridge with an A2A card in its registration (``Agent(..., a2a=AgentCard(...))``) is served
while its stream is open (``loom serve`` calls :meth:`A2AServer.expose` and
:meth:`A2AServer.withdraw`). A request for an agent not exposed now gets 404 with a JSON-RPC
error (code -32001).

Each exposed agent lives under ``/a2a/{agent_id}/``:

* ``GET  /a2a/{id}/.well-known/agent-card.json``: its card (open to all, as A2A discovery
  expects: it names the bearer scheme a client must then use); ``/.well-known/agent-card.json``
  is the first exposed agent's card;
* ``POST /a2a/{id}/``: JSON-RPC (``SendMessage``, ``SendStreamingMessage``, ``GetTask``,
  ``CancelTask``, ``SubscribeToTask``, ``ListTasks``);
* ``/a2a/{id}/rest/...``: the same over HTTP+JSON (the SDK's REST routes).

Its tasks are kept in ``{data_dir}/a2a/{id}.sqlite3`` (the SDK's ``DatabaseTaskStore``), one
file per agent so a task id of one agent is unknown to another; they outlive a restart.

The SDK itself is imported when an ``A2AServer`` is made (``_a2a_sdk.py``), not with
``loom.web``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup, TaskStatus
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from loom.runtime import AgentRuntime

from ._a2a_agent import A2AAgent, CancelTurn
from ._auth import Auth

if TYPE_CHECKING:
    from a2a.types import AgentCard

    from ._a2a_sdk import SdkEndpoints

__all__ = ["A2AServer"]

log = logging.getLogger("loom.web.a2a")


_CHANGES = 256
"""Exposures and withdrawals waiting to be applied (agents connecting and leaving)."""

_CARD_PATH = "/.well-known/agent-card.json"


class A2AServer:
    """The exposed agents' A2A endpoints; an async context manager (the HTTP server enters it
    before it listens and leaves it after it stopped).

    The agents given are served from the start. :meth:`expose` and :meth:`withdraw` add and
    take away others while it runs (``loom serve``: an agent connected through the bridge
    whose registration carries an A2A card, for as long as its stream is open). The SDK
    loads with the first agent exposed: a server with none pays nothing for it.

    Args:
        runtime: the server's runtime (its bus carries the messages; its capabilities are the
            cards' skills).
        agents: the agents to expose from the start.
        data_dir: where ``a2a/{id}.sqlite3`` keeps each agent's tasks.
        cancel_turn: how ``tasks/cancel`` cancels an agent's turn.
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        agents: Sequence[A2AAgent] = (),
        *,
        data_dir: str | Path,
        cancel_turn: CancelTurn | None = None,
    ) -> None:
        self._runtime = runtime
        self._data_dir = data_dir
        self._cancel_turn = cancel_turn
        self._endpoints: SdkEndpoints | None = None
        if agents:
            self._endpoints = self._load(agents)
        self._auth: Auth | None = None
        # Bounded; applied in order by one task (a store opens on the way): a change that
        # does not fit is logged and lost (that agent is then not served until it reconnects).
        self._changes, self._changes_rx = anyio.create_memory_object_stream[
            tuple[str, A2AAgent | None]
        ](_CHANGES)
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._closed = False

    def _load(self, agents: Sequence[A2AAgent]) -> SdkEndpoints:
        from ._a2a_sdk import SdkEndpoints  # the SDK loads only where agents are exposed

        return SdkEndpoints(
            self._runtime, agents, data_dir=self._data_dir, cancel_turn=self._cancel_turn
        )

    @property
    def agents(self) -> tuple[str, ...]:
        """The exposed agents' ids: the configured ones in order, then those exposed since."""
        return self._endpoints.agents if self._endpoints is not None else ()

    def card(self, agent_id: str, url: str, *, bearer: bool) -> AgentCard:
        """Agent ``agent_id``'s card as served now: its interfaces at ``url`` (the agent's
        root, ``.../a2a/{id}/``), its declared skills or one per capability it offers (else
        one "message" skill), and the bearer scheme when the port needs a token.

        Raises:
            KeyError: the agent is not exposed.
        """
        if self._endpoints is None:
            raise KeyError(agent_id)
        return self._endpoints.card(agent_id, url, bearer=bearer)

    def expose(self, agent: A2AAgent) -> None:
        """Serve ``agent`` too, as soon as its store is open (in order with
        :meth:`withdraw`; never blocks). One exposed already takes ``agent.card``."""
        self._change(agent.agent_id, agent)

    def withdraw(self, agent_id: str) -> None:
        """Stop serving ``agent_id`` (never blocks): its URLs answer 404 from then on and its
        tasks' open streams end; those tasks are failed if it is exposed again. An agent of
        the configured ones stays, with its configured card."""
        self._change(agent_id, None)

    def _change(self, agent_id: str, agent: A2AAgent | None) -> None:
        try:
            self._changes.send_nowait((agent_id, agent))
        except anyio.ClosedResourceError:
            pass  # closed: nothing is served any more
        except anyio.WouldBlock:
            log.warning(
                "A2A: too many agents coming and going at once: %s not %s",
                agent_id,
                "exposed" if agent is not None else "withdrawn",
            )

    async def _apply(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._changes_rx:
            async for agent_id, agent in self._changes_rx:
                try:
                    await self._apply_one(agent_id, agent)
                except Exception:  # one agent's broken store must not stop the others'
                    log.exception("A2A: exposing or withdrawing %s failed", agent_id)

    async def _apply_one(self, agent_id: str, agent: A2AAgent | None) -> None:
        endpoints = self._endpoints
        if agent is None:
            if endpoints is not None:
                await endpoints.withdraw(agent_id)
            return
        if endpoints is None:
            assert self._tg is not None
            endpoints = self._load(())
            # Entered and left by a task of its own (its task group must be left by the task
            # that entered it), which the close of this server's task group ends.
            await self._tg.start(self._hold, endpoints)
            self._endpoints = endpoints
        await endpoints.expose(agent)

    async def _hold(
        self, endpoints: SdkEndpoints, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        async with endpoints:
            task_status.started()
            await anyio.sleep_forever()

    def routes(self, auth: Auth) -> list[BaseRoute]:
        """The routes to mount on the HTTP port's application: ``/a2a/{id}/...`` of every
        agent exposed at the time of the request (else 404), and at the top the first
        one's card."""
        self._auth = auth

        async def top_card(request: Request) -> Response:
            endpoints = self._endpoints
            agents = endpoints.agents if endpoints is not None else ()
            if endpoints is None or not agents:
                return _not_exposed("")
            return endpoints.card_response(agents[0], request, bearer=auth.required)

        return [
            Mount("/a2a/{agent_id}", app=self._dispatch),
            Route(_CARD_PATH, top_card, methods=["GET"]),
        ]

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        agent_id = str(scope.get("path_params", {}).get("agent_id", ""))
        endpoints, auth = self._endpoints, self._auth
        app = endpoints.app(agent_id, auth) if endpoints is not None and auth is not None else None
        if app is None:
            await _not_exposed(agent_id)(scope, receive, send)
            return
        await app(scope, receive, send)

    async def end_streams(self) -> None:
        """Stop following the tasks in flight, which ends their open streams (the HTTP
        server does this before its shutdown, which would otherwise wait its whole grace on
        them). Their tasks keep the state last stored (``working``); the next start marks
        them ``failed``."""
        if self._endpoints is not None:
            await self._endpoints.end_streams()

    async def aclose(self) -> None:
        """:meth:`end_streams`, then close the stores."""
        if self._closed:
            return
        self._closed = True
        self._changes.close()
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        elif self._endpoints is not None:  # never entered
            await self._endpoints.aclose()

    async def __aenter__(self) -> A2AServer:
        async with AsyncExitStack() as stack:
            if self._endpoints is not None:
                await stack.enter_async_context(self._endpoints)
            # Last in, first out: the changes stop being applied before the stores close.
            tg = self._tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            await tg.start(self._apply)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _not_exposed(agent_id: str) -> JSONResponse:
    """What a request for an agent not exposed (now) gets: 404, with a JSON-RPC error a
    client's JSON-RPC layer can read."""
    what = f"agent {agent_id!r} is" if agent_id else "no agent is"
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32001, "message": f"{what} not exposed over A2A here (now)"},
        },
        404,
    )
