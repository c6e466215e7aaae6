"""``loom run``: agent files as supervised subprocesses, connected to a Loom server.

What it does, in order:

1. **Finds the agents.** Each PATH is a ``.py`` file or a folder; a folder contributes its
   ``*.py`` files (not its subfolders), sorted, except those whose name starts with ``_``. The
   files are imported in one short-lived subprocess (never in the supervisor) and their agents
   found by the rule in ``sdk/cli/_agent_host.py``: module-level ``Agent`` instances. A file that
   cannot be imported or holds no agent, or an agent id found twice, stops ``loom run``
   before anything starts.
2. **Finds a server.** The given address, or else an **embedded** server started in this
   process on ``127.0.0.1`` (``port`` 0 picks a free one), which lives as long as the run.
3. **Runs one subprocess per agent** (``python -m loom.cli._agent_host run FILE ID``), so one
   agent crashing cannot take the others down. Each output line of the agent goes to this
   process's stdout (its stderr to stderr), prefixed ``[agent-id] ``; the supervisor's own
   notes about an agent carry the same prefix, on stderr.
4. **Restarts a crashed agent** (a non-zero exit) after a capped, jittered exponential
   backoff (:class:`RunConfig.backoff`); the count of consecutive failures is forgotten once a
   process has run ``stable_after`` seconds. An agent that exits 0 (it stopped by itself) is
   not restarted; the run ends when no agent is left.
5. **Stops cleanly on SIGINT or SIGTERM:** every agent is sent SIGTERM (its ``on_stop`` runs,
   it disconnects), given ``grace`` seconds, then killed; then the embedded server drains.
   The agents run in their own sessions, so a Ctrl-C in a terminal reaches the supervisor only
   and the order above holds. An agent whose supervisor dies sees its stdin close and stops.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import anyio
import msgspec
from anyio.abc import ByteReceiveStream, Process

from loom.bridge import Backoff, ClientTLS
from loom.runtime import LoomError

from ._agent_host import LIST_MARKER, HostConfig

__all__ = ["AgentFile", "RunConfig", "RunError", "discover", "run"]

log = logging.getLogger("loom.run")

# -u: unbuffered, so an agent's print reaches the terminal when it is made, not at exit.
_HOST = [sys.executable, "-u", "-m", "loom.cli._agent_host"]


class RunError(LoomError):
    """``loom run`` cannot start: a path, a file or an agent is wrong (named in the message)."""


class AgentFile(msgspec.Struct, frozen=True, kw_only=True):
    """One agent to run: the file it is defined in, and its id."""

    file: str
    id: str


class RunConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What ``loom run`` runs with.

    Attributes:
        paths: agent files and folders of them.
        address: the server's ``host:port``; ``None`` starts an embedded server.
        token: the bearer token (the embedded server then requires it too).
        tls: TLS for the agents' channels (to a given address only).
        port: the embedded server's port (0: a free one).
        grace: seconds an agent gets to stop after SIGTERM before it is killed.
        backoff: delays between restarts of a crashing agent.
        stable_after: seconds after which a running agent's past failures are forgotten.
        log_level: the agents' log level (their log goes to stderr, prefixed).
    """

    paths: tuple[str, ...]
    address: str | None = None
    token: str | None = None
    tls: ClientTLS | None = None
    port: int = 0
    grace: float = 5.0
    backoff: Backoff = msgspec.field(
        default_factory=lambda: Backoff(initial=0.2, maximum=10.0, multiplier=2.0, jitter=0.3)
    )
    stable_after: float = 10.0
    log_level: str = "info"


def _files(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.glob("*.py") if p.is_file() and not p.name.startswith("_")
            )
            if not found:
                raise RunError(f"{raw}: the folder holds no agent files (*.py)")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise RunError(f"{raw}: no such file or folder")
    return list(dict.fromkeys(files))


async def discover(paths: Sequence[str]) -> list[AgentFile]:
    """The agents of ``paths`` (see the module docs), found in a subprocess.

    Raises:
        RunError: a path does not exist, a file cannot be imported or holds no agent, or an
            agent id is found twice.
    """
    files = _files(paths)
    result = await anyio.run_process(
        [*_HOST, "list", *map(str, files)], check=False, stderr=subprocess.PIPE
    )
    lines = result.stdout.decode(errors="replace").splitlines()
    marked = [line for line in lines if line.startswith(LIST_MARKER)]
    if result.returncode != 0 or not marked:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise RunError(f"cannot inspect the agent files: {detail[-1] if detail else 'no answer'}")
    entries = json.loads(marked[-1].removeprefix(LIST_MARKER))
    errors = [e["error"] for e in entries if "error" in e]
    if errors:
        raise RunError("; ".join(errors))
    agents = [AgentFile(file=e["file"], id=e["id"]) for e in entries]
    seen: dict[str, str] = {}
    for agent in agents:
        if agent.id in seen:
            raise RunError(
                f"agent {agent.id!r} is defined in both {seen[agent.id]} and {agent.file}"
            )
        seen[agent.id] = agent.file
    return agents


async def _relay(stream: ByteReceiveStream, prefix: bytes, out: TextIO) -> None:
    """Copy ``stream`` to ``out`` line by line, each line prefixed."""
    sink = out.buffer if hasattr(out, "buffer") else None
    pending = b""

    def write(line: bytes) -> None:
        if sink is not None:
            sink.write(prefix + line)
            sink.flush()
        else:
            out.write((prefix + line).decode(errors="replace"))
            out.flush()

    async for chunk in stream:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            write(line + b"\n")
    if pending:
        write(pending + b"\n")


def _note(agent_id: str, text: str) -> None:
    print(f"[{agent_id}] {text}", file=sys.stderr, flush=True)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _Supervisor:
    def __init__(self, config: RunConfig, host: HostConfig) -> None:
        self.config = config
        self.host = host
        self.stopping = anyio.Event()

    async def supervise(self, agent: AgentFile) -> None:
        failures = 0
        restarts = 0
        # One registration secret per agent, shown by each of its processes: a restarted
        # process takes the agent's id back, which the server holds for the secret's owner.
        host = msgspec.structs.replace(self.host, secret=secrets.token_urlsafe(32))
        line = msgspec.json.encode(host) + b"\n"
        while not self.stopping.is_set():
            started = anyio.current_time()
            code = await self._run_once(agent, line)
            if self.stopping.is_set():
                return
            if code == 0:
                _note(agent.id, "stopped (exit code 0); not restarted")
                return
            if anyio.current_time() - started >= self.config.stable_after:
                failures = 0
            failures += 1
            restarts += 1
            delay = self.config.backoff.delay(failures)
            _note(agent.id, f"{_describe(code)}; restart {restarts} in {delay:.2f} s")
            with anyio.move_on_after(delay):
                await self.stopping.wait()

    async def _run_once(self, agent: AgentFile, line: bytes) -> int:
        process: Process = await anyio.open_process(
            [*_HOST, "run", agent.file, agent.id],
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops us in order
        )
        prefix = f"[{agent.id}] ".encode()
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_relay, process.stdout, prefix, sys.stdout)
            tg.start_soon(_relay, process.stderr, prefix, sys.stderr)
            # If it died at once, its exit code says why. Its stdin stays open after this:
            # closing it (our death) is what stops an orphan.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdin.send(line)

            async def stop_on_request() -> None:
                await self.stopping.wait()
                await _stop(process, self.config.grace, agent.id)

            tg.start_soon(stop_on_request)
            code = await process.wait()
            tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await process.aclose()
        return code


async def _stop(process: Process, grace: float, agent_id: str) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    with anyio.move_on_after(grace):
        await process.wait()
        return
    _note(agent_id, f"did not stop within {grace:g} s of SIGTERM: killed")
    process.kill()


async def _supervise_all(config: RunConfig, agents: Sequence[AgentFile], address: str) -> None:
    host = HostConfig(
        address=address, token=config.token, tls=config.tls, log_level=config.log_level
    )
    supervisor = _Supervisor(config, host)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def on_signal() -> None:
                async for signum in signals:
                    print(
                        f"loom run: {signal.Signals(signum).name} received: stopping the agents",
                        file=sys.stderr,
                        flush=True,
                    )
                    supervisor.stopping.set()
                    return

            async def all_agents() -> None:
                async with anyio.create_task_group() as agents_tg:
                    for agent in agents:
                        agents_tg.start_soon(supervisor.supervise, agent)
                tg.cancel_scope.cancel()  # every agent ended (stopped by itself, or by us)

            tg.start_soon(on_signal)
            tg.start_soon(all_agents)


async def run(config: RunConfig) -> int:
    """Run ``config.paths`` until SIGINT/SIGTERM or until every agent has stopped.

    Returns:
        The exit code: 0.

    Raises:
        RunError: the agents cannot be found (nothing was started).
    """
    agents = await discover(config.paths)
    names = ", ".join(a.id for a in agents)
    if config.address is not None:
        print(f"loom run: {names} -> {config.address}", file=sys.stderr, flush=True)
        await _supervise_all(config, agents, config.address)
        return 0

    from loom.bridge import BridgeServer
    from loom.runtime import AgentRuntime, EventBus

    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        BridgeServer(runtime, port=config.port, token=config.token) as server,
    ):
        # The address goes to stdout, like loom serve's, for scripts that want to connect.
        print(f"loom run: embedded server listening on {server.address}", flush=True)
        print(f"loom run: {names}", file=sys.stderr, flush=True)
        await _supervise_all(config, agents, server.address)
    return 0
