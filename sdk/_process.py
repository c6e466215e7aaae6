"""An agent process: :func:`run_agent` runs one agent until a signal stops it, and says how
it ended as an exit code; ``Agent.run()`` and ``loom run``'s agent host both use it.

What a process promises (``docs/bridge.md``, "An agent process"): a signal at any moment is
a quiet stop (at once before the agent runs; a drain once it does: :func:`serve_agent` with
``stop``), an expected failure is one log line, never a traceback, and the exit code says
whether running it again can help (:class:`Ended`).
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from loom.bridge import (
    AgentReleased,
    BridgeClient,
    ClientOptions,
    ClientTLS,
    ConnectFailed,
    ConnectionEnded,
)
from loom.runtime import AgentExists, AgentStatus, InvalidArgument, LoomError
from loom.runtime.lowlevel import HasAgentSpec

from ._remote import serve_agent
from ._telemetry import TraceConfig, open_tracing

__all__ = ["DEFAULT_ADDRESS", "RELEASED_EXIT_CODE", "Ended", "exit_code_of", "run_agent"]

DEFAULT_ADDRESS = "127.0.0.1:50051"
"""Where an agent or a client looks for the server when neither an address nor
``LOOM_BRIDGE_ADDR`` says: where ``loom serve`` listens by default."""

log = logging.getLogger("loom.agent")


class Ended(msgspec.Struct, frozen=True, kw_only=True):
    """How :func:`run_agent` ended.

    Attributes:
        status: how the agent ended, ``None`` when it could not run (``error`` says why).
        error: the error that ended it, in one line (``""`` if none).
        code: the process's exit code: 0 stopped (also by a signal), 1 failed (a restart may
            help: it crashed, the server went away for good), 3 a restart cannot help (refused
            credentials, not permitted, its id taken by a live connection past
            ``ClientOptions.id_wait``, a wrong address or option; also when a reconnection
            is refused so), 4 an operator released its id while it ran (``loom agents
            release ID``): a restart would take the id back, which is what the release undid.
    """

    status: AgentStatus | None
    error: str = ""
    code: int = 0


# gRPC statuses of a refused connection that running the agent again would meet again
# (ALREADY_EXISTS: its id stayed taken by a live connection past ClientOptions.id_wait).
_UNFIXABLE = frozenset(
    {"UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "UNIMPLEMENTED", "ALREADY_EXISTS"}
)


RELEASED_EXIT_CODE = 4
"""The exit code of an agent process whose id an operator released while it ran."""


def exit_code_of(exc: Exception) -> int:
    """The exit code of an agent process that ``exc`` ended (see :class:`Ended`)."""
    if isinstance(exc, AgentReleased):
        return RELEASED_EXIT_CODE
    if isinstance(exc, (ConnectFailed, ConnectionEnded)):
        return 3 if exc.code in _UNFIXABLE else 1
    if isinstance(exc, InvalidArgument) and not isinstance(exc, AgentExists):
        return 3  # a malformed address, option or agent: the same next time
    return 1


async def run_agent(
    agent: HasAgentSpec,
    address: str,
    *,
    token: str | None = None,
    tls: ClientTLS | bool | None = None,
    options: ClientOptions | None = None,
    stop_timeout_s: float = 5.0,
    tracing: TraceConfig | None = None,
    task_status: TaskStatus[BridgeClient] = anyio.TASK_STATUS_IGNORED,
) -> Ended:
    """:func:`serve_agent` until SIGINT or SIGTERM (then a drain and a clean disconnect),
    whatever the stage: before the first connection, while reconnecting, while connected.

    With ``tracing``, its spans are exported over OTLP (``sdk/_telemetry.py``) and flushed
    once the agent has stopped.

    An error that ends the agent is logged on ``loom.agent`` in one line (never a
    traceback: these are expected failures) and returned in :class:`Ended`.
    """
    ended = Ended(status=AgentStatus.STOPPED)
    stop = anyio.Event()
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_tracing(tracing) as tracer_provider, anyio.create_task_group() as tg:
            running = anyio.Event()

            async def run() -> None:
                nonlocal ended
                try:
                    status = await serve_agent(
                        agent,
                        address,
                        token=token,
                        tls=tls,
                        options=options,
                        stop_timeout_s=stop_timeout_s,
                        stop=stop,
                        tracer_provider=tracer_provider,
                        task_status=_Started(task_status, running),
                    )
                    ended = Ended(status=status, code=0 if status is AgentStatus.STOPPED else 1)
                except LoomError as exc:  # ConnectFailed, RegistrationRefused, AgentStartFailed
                    ended = Ended(status=None, error=str(exc), code=exit_code_of(exc))
                    # An operator's release is a decision, not a fault of the agent's.
                    level = logging.WARNING if isinstance(exc, AgentReleased) else logging.ERROR
                    log.log(level, "%s", exc)
                finally:
                    tg.cancel_scope.cancel()

            tg.start_soon(run)
            async for signum in signals:
                name = signal.Signals(signum).name
                if stop.is_set() or not running.is_set():
                    # Not connected yet (nothing to drain), or a second signal: at once.
                    log.info("%s received: stopping", name)
                    tg.cancel_scope.cancel()
                    break
                log.info("%s received: stopping (grace %g s)", name, stop_timeout_s)
                stop.set()
    return ended


class _Started:
    """A ``TaskStatus`` that also sets an event once the agent runs."""

    def __init__(self, inner: TaskStatus[BridgeClient], event: anyio.Event) -> None:
        self._inner = inner
        self._event = event

    def started(self, value: Any = None) -> None:
        self._event.set()
        self._inner.started(value)
