"""``loom.serve_agent``: run an agent against a Loom server from async code.

``Agent.run()`` is the blocking way in (it calls ``anyio.run`` and handles SIGINT/SIGTERM);
this is the same thing for a caller that already has an event loop and a task group. The
machinery is ``sdk/_remote.py``'s; this module is its documented public face.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from ._remote import serve_agent as _serve_agent

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from loom.bridge import BridgeClient, ClientOptions, ClientTLS, StateListener
    from loom.runtime import AgentSpec, AgentStatus
    from loom.runtime.lowlevel import HasAgentSpec

__all__ = ["serve_agent"]


async def serve_agent(
    agent: AgentSpec | HasAgentSpec,
    address: str,
    *,
    token: str | None = None,
    tls: ClientTLS | bool | None = None,
    options: ClientOptions | None = None,
    on_state_change: StateListener | None = None,
    stop_timeout_s: float = 5.0,
    stop: anyio.Event | None = None,
    tracer_provider: TracerProvider | None = None,
    task_status: TaskStatus[BridgeClient] = anyio.TASK_STATUS_IGNORED,
) -> AgentStatus:
    """Run ``agent`` in this process, connected to the Loom server at ``address``.

    The async counterpart of :meth:`Agent.run`: the agent's handlers, timers, tools,
    ``ctx.spawn`` and ``ctx.collab`` behave as they do in process (``sdk/_remote.py`` says
    how), while everything it emits, requests or calls goes through the server. It returns
    when the agent stops by itself (``ctx.stop()``, or supervision gave up) or fails for
    good. To stop it from outside, set ``stop``: it drains (takes no new events or calls,
    lets the handler and the capability calls in progress finish within ``stop_timeout_s``),
    runs ``on_stop`` (it may still emit) and disconnects cleanly. Cancelling the enclosing
    scope does the same at once, cancelling what runs. Unlike ``Agent.run()`` it installs no
    signal handlers and reads no environment variables.

    Start it with ``await tg.start(serve_agent, agent, address)`` to wait until the agent is
    registered on the server and its ``on_start`` has returned::

        async with anyio.create_task_group() as tg:
            await tg.start(functools.partial(loom.serve_agent, agent, "127.0.0.1:50051"))
            ...  # the agent is live on the server here
            tg.cancel_scope.cancel()  # stops it cleanly

    A lost connection is retried with backoff (``options.backoff``); events the agent
    emits meanwhile wait for it, except ``QoS.REALTIME`` ones, which are dropped.

    Args:
        agent: an :class:`Agent` (or any object with ``agent_spec()``) or an ``AgentSpec``.
        address: ``host:port`` of the server.
        token: the bearer token the server requires, if any.
        tls: ``True`` for TLS with the system's CAs, or a ``loom.bridge.ClientTLS``.
        options: the connection's bounds and timeouts (``loom.bridge.ClientOptions``).
        on_state_change: called with ``(old, new)`` on each ``ConnectionStatus`` change.
        stop_timeout_s: the grace of a stop (also the local runtime's ``stop_timeout_s``).
        stop: set it to stop the agent gracefully (see above).
        tracer_provider: where the agent's spans go (publish, process, tool calls, turns);
            none without one. Its trace context then travels with what it sends, so the
            server and other agents continue its traces (``docs/observability.md``).
        task_status: set by ``TaskGroup.start``; it receives the connected ``BridgeClient``.

    Returns:
        How the agent ended: ``AgentStatus.STOPPED`` or ``AgentStatus.FAILED``.

    Raises:
        ConnectFailed: the first connection failed (unreachable, refused credentials).
        RegistrationRefused: the server refused the registration.
        AgentStartFailed: the agent's ``on_start`` kept failing.
    """
    return await _serve_agent(
        agent,
        address,
        token=token,
        tls=tls,
        options=options,
        on_state_change=on_state_change,
        stop_timeout_s=stop_timeout_s,
        stop=stop,
        tracer_provider=tracer_provider,
        task_status=task_status,
    )
