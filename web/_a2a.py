"""The A2A server of the HTTP port: chosen agents exposed over the Agent2Agent protocol (1.0),
with the official ``a2a-sdk``'s request handler, routes and SQLite task store.

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

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from loom.runtime import AgentRuntime

from ._a2a_agent import A2AAgent, CancelTurn
from ._auth import Auth

if TYPE_CHECKING:
    from a2a.types import AgentCard

__all__ = ["A2AServer"]


class A2AServer:
    """The exposed agents' A2A endpoints; an async context manager (the HTTP server enters it
    before it listens and leaves it after it stopped).

    Args:
        runtime: the server's runtime (its bus carries the messages; its capabilities are the
            cards' skills).
        agents: the agents to expose.
        data_dir: where ``a2a/{id}.sqlite3`` keeps each agent's tasks.
        cancel_turn: how ``tasks/cancel`` cancels a turn running in this process.
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        agents: Sequence[A2AAgent],
        *,
        data_dir: str | Path,
        cancel_turn: CancelTurn | None = None,
    ) -> None:
        from ._a2a_sdk import SdkEndpoints  # the SDK loads only where agents are exposed

        self._endpoints = SdkEndpoints(runtime, agents, data_dir=data_dir, cancel_turn=cancel_turn)

    @property
    def agents(self) -> tuple[str, ...]:
        """The exposed agents' ids, in the configured order."""
        return self._endpoints.agents

    def card(self, agent_id: str, url: str, *, bearer: bool) -> AgentCard:
        """Agent ``agent_id``'s card as served now: its interfaces at ``url`` (the agent's
        root, ``.../a2a/{id}/``), one skill per capability it offers (else one "message"
        skill), and the bearer scheme when the port needs a token."""
        return self._endpoints.card(agent_id, url, bearer=bearer)

    def routes(self, auth: Auth) -> list[BaseRoute]:
        """The routes to mount on the HTTP port's application."""
        return self._endpoints.routes(auth)

    async def end_streams(self) -> None:
        """Stop following the tasks in flight, which ends their open streams (the HTTP
        server does this before its shutdown, which would otherwise wait its whole grace on
        them). Their tasks keep the state last stored (``working``); the next start marks
        them ``failed``."""
        await self._endpoints.end_streams()

    async def aclose(self) -> None:
        """:meth:`end_streams`, then close the stores."""
        await self._endpoints.aclose()

    async def __aenter__(self) -> A2AServer:
        await self._endpoints.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
