"""``loom run``: agent files as supervised subprocesses, connected to a Loom server.

What it does, in order:

1. **Finds the agents.** Each PATH is a ``.py`` file or a folder; a folder contributes its
   ``*.py`` files (not its subfolders), sorted, except those whose name starts with ``_``. The
   files are imported in one short-lived subprocess (never in the supervisor) and their agents
   found by the rule in ``sdk/cli/_agent_host.py``: module-level ``Agent`` instances. A file that
   cannot be imported or holds no agent, or an agent id found twice, stops ``loom run``
   before anything starts.
2. **Finds a server.** The given address (``--address``, else ``$LOOM_BRIDGE_ADDR``, else
   ``127.0.0.1:50051``, where ``loom serve`` listens by default); with ``embedded``, a server
   started in this process on ``127.0.0.1`` (``port`` 0 picks a free one) instead, which
   lives as long as the run. That server is **memory only**: no NATS, no data directory, so
   nothing in it outlives the run and durable agents (``Agent(durable=True)``) have nowhere
   to be stored; it says so when it starts, ``loom status`` shows ``nats: off``, and a run
   with a durable agent is refused before anything starts (run those against ``loom
   serve``, whose defaults store durable events in its embedded NATS JetStream). An agent
   keeps retrying its first connection (forever, unless ``connect_timeout``), so ``loom run``
   may start before ``loom serve``.
3. **Runs one subprocess per agent** (``python -m loom.cli._agent_host run FILE ID``), so one
   agent crashing cannot take the others down. Each output line of the agent goes to this
   process's stdout (its stderr to stderr), prefixed with the time and ``[agent-id]``; the
   supervisor's own notes carry the same prefix, on stderr. With ``log_format="json"`` every
   line is a JSON object instead, with an ``"agent"`` key.
4. **Restarts a crashed agent** (exit code 1, or killed by a signal) after a capped, jittered
   exponential backoff (:class:`RunConfig.backoff`); the count of consecutive failures is
   forgotten once a process has run ``stable_after`` seconds. An agent that exits 0 (it
   stopped by itself) is not restarted; the run ends when no agent is left. An agent that
   cannot run (exit code 2: its file or agent cannot be loaded; 3: the server refused it for
   good, e.g. a wrong token) is not restarted either: a restart cannot fix that. The run
   says why in one line, stops the other agents and exits 1. An agent whose id an operator
   released while it ran (exit code 4, ``loom agents release ID``) is not restarted, which
   would take the id back; the others go on.
5. **Stops cleanly on SIGINT or SIGTERM:** every agent is sent SIGTERM and drains (no new
   events or calls; the handler and the capability calls in progress get ``grace`` seconds;
   ``on_stop`` runs; it disconnects). One still running ``grace`` + 2 seconds later is
   killed. Then the embedded server drains. The agents run in their own sessions, so a
   Ctrl-C in a terminal reaches the supervisor only and the order above holds. An agent
   whose supervisor dies sees its stdin close and stops the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import anyio
import msgspec
from anyio.abc import ByteReceiveStream, Process

from loom.bridge import Backoff, ClientTLS
from loom.runtime import LoomError

from .._process import DEFAULT_ADDRESS, RELEASED_EXIT_CODE

if TYPE_CHECKING:
    from ._agent_host import HostConfig

__all__ = ["AgentFile", "RunConfig", "RunError", "discover", "run"]

log = logging.getLogger("loom.run")

# -u: unbuffered, so an agent's print reaches the terminal when it is made, not at exit.
_HOST = [sys.executable, "-u", "-m", "loom.cli._agent_host"]


class RunError(LoomError):
    """``loom run`` cannot start: a path, a file or an agent is wrong (named in the message)."""


class AgentFile(msgspec.Struct, frozen=True, kw_only=True):
    """One agent to run: the file it is defined in, its id, and whether it is durable."""

    file: str
    id: str
    durable: bool = False


class RunConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What ``loom run`` runs with.

    Attributes:
        paths: agent files and folders of them.
        address: the server's ``host:port`` (unused with ``embedded``).
        embedded: start a server in this process instead (on ``port``).
        token: the bearer token (the embedded server then requires it too).
        tls: TLS for the agents' channels (to a given address only).
        port: the embedded server's port (0: a free one).
        grace: seconds a stopping agent gives its handler and capability calls in progress
            (it is killed if still running 2 s after that).
        connect_timeout: seconds an agent retries its first connection (``None``: forever).
        id_wait: seconds an agent waits for its id while a live connection has it
            (``ClientOptions.id_wait``).
        backoff: delays between restarts of a crashing agent.
        stable_after: seconds after which a running agent's past failures are forgotten.
        log_level: the agents' log level (their log goes to stderr, prefixed).
        log_format: ``text`` or ``json`` (the agents' lines and this process's own).
        traceback: the agents log the tracebacks of their code's failures.
        otlp_endpoint: the agents export their traces over OTLP/gRPC there (else the
            ``OTEL_*`` variables they inherit decide).
        trace_sample: the share of new traces they keep (else ``OTEL_TRACES_SAMPLER``).
    """

    paths: tuple[str, ...]
    address: str = DEFAULT_ADDRESS
    embedded: bool = False
    token: str | None = None
    tls: ClientTLS | None = None
    port: int = 0
    grace: float = 5.0
    connect_timeout: float | None = None
    id_wait: float = 30.0
    backoff: Backoff = msgspec.field(
        default_factory=lambda: Backoff(initial=0.2, maximum=10.0, multiplier=2.0, jitter=0.3)
    )
    stable_after: float = 10.0
    log_level: str = "info"
    log_format: str = "text"
    traceback: bool = False
    otlp_endpoint: str | None = None
    trace_sample: float | None = None


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
    # Imported here, not at the top: `python -m loom.cli._agent_host` imports loom.cli first,
    # and runpy warns when that import has loaded the module it is about to run.
    from ._agent_host import LIST_MARKER

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
    agents = [
        AgentFile(file=e["file"], id=e["id"], durable=e.get("durable", False)) for e in entries
    ]
    seen: dict[str, str] = {}
    for agent in agents:
        if agent.id in seen:
            raise RunError(
                f"agent {agent.id!r} is defined in both {seen[agent.id]} and {agent.file}"
            )
        seen[agent.id] = agent.file
    return agents


def _stamp() -> str:
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"


class _Output:
    """Where ``loom run``'s lines go, text or JSON: an agent's, prefixed, and its own notes."""

    def __init__(self, log_format: str, log_level: str = "info") -> None:
        self.json = log_format == "json"
        self.debug = log_level == "debug"

    def line(self, agent_id: str, raw: bytes, out: TextIO, stream: str) -> None:
        text = raw.decode(errors="replace").rstrip("\r\n")
        if not self.json:
            self._write(out, f"{_stamp()} [{agent_id}] {text}")
            return
        record: dict[str, object] | None = None
        if text.startswith("{"):
            try:
                decoded = json.loads(text)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                record = {**decoded, "agent": agent_id}
        if record is None:
            record = {"ts": _stamp(), "agent": agent_id, "stream": stream, "message": text}
        self._write(out, json.dumps(record))

    def note(self, text: str, agent_id: str = "", *, level: str = "INFO") -> None:
        """A line of the supervisor's own, on stderr (a ``DEBUG`` one only at debug)."""
        if level == "DEBUG" and not self.debug:
            return
        if self.json:
            record: dict[str, object] = {"ts": _stamp(), "level": level, "logger": "loom.run"}
            if agent_id:
                record["agent"] = agent_id
            record["message"] = text
            self._write(sys.stderr, json.dumps(record))
        elif agent_id:
            self._write(sys.stderr, f"{_stamp()} [{agent_id}] {text}")
        else:
            self._write(sys.stderr, f"{_stamp()} loom run: {text}")

    @staticmethod
    def _write(out: TextIO, line: str) -> None:
        out.write(line + "\n")
        out.flush()


async def _relay(
    stream: ByteReceiveStream, agent_id: str, output: _Output, out: TextIO, name: str
) -> None:
    """Copy ``stream`` to ``out`` line by line, each line prefixed."""
    pending = b""
    async for chunk in stream:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            output.line(agent_id, line, out, name)
    if pending:
        output.line(agent_id, pending, out, name)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# Exit codes of an agent host (sdk/cli/_agent_host.py) that a restart cannot change.
_CANNOT_RUN = {
    2: "its file or agent cannot be loaded",
    3: "the server refused it for good",
}


class _Supervisor:
    def __init__(self, config: RunConfig, host: HostConfig, output: _Output) -> None:
        self.config = config
        self.host = host
        self.output = output
        self.stopping = anyio.Event()
        self.failed = False  # an agent could not run: the run exits 1

    async def supervise(self, agent: AgentFile) -> None:
        failures = 0
        restarts = 0
        note = self.output.note
        # One registration secret per agent, shown by each of its processes: a restarted
        # process takes the agent's id back, which the server holds for the secret's owner.
        host = msgspec.structs.replace(self.host, secret=secrets.token_urlsafe(32))
        while not self.stopping.is_set():
            started = anyio.current_time()
            # Each process says how many came before it: the server counts the restarts.
            line = msgspec.json.encode(msgspec.structs.replace(host, restarts=restarts)) + b"\n"
            code = await self._run_once(agent, line)
            if self.stopping.is_set():
                return
            if code == 0:
                note("stopped (exit code 0); not restarted", agent.id)
                return
            if code == RELEASED_EXIT_CODE:
                # The operator freed its id for another process: taking it back is not ours.
                note(f"{_describe(code)}: released by the operator; not restarted", agent.id)
                return
            if code in _CANNOT_RUN:
                note(
                    f"{_describe(code)}: {_CANNOT_RUN[code]}; not restarted, stopping the run",
                    agent.id,
                    level="ERROR",
                )
                self.failed = True
                self.stopping.set()
                return
            if anyio.current_time() - started >= self.config.stable_after:
                failures = 0
            failures += 1
            restarts += 1
            delay = self.config.backoff.delay(failures)
            note(f"{_describe(code)}; restart {restarts} in {delay:.2f} s", agent.id)
            with anyio.move_on_after(delay):
                await self.stopping.wait()

    async def _run_once(self, agent: AgentFile, line: bytes) -> int:
        process: Process = await anyio.open_process(
            [*_HOST, "run", agent.file, agent.id],
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops us in order
        )
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        self.output.note(f"started {agent.file} (pid {process.pid})", agent.id, level="DEBUG")
        relays_done = [anyio.Event(), anyio.Event()]

        async def relay(
            stream: ByteReceiveStream, out: TextIO, name: str, done: anyio.Event
        ) -> None:
            try:
                await _relay(stream, agent.id, self.output, out, name)
            finally:
                done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(relay, process.stdout, sys.stdout, "stdout", relays_done[0])
            tg.start_soon(relay, process.stderr, sys.stderr, "stderr", relays_done[1])
            # If it died at once, its exit code says why. Its stdin stays open after this:
            # closing it (our death) is what stops an orphan.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await process.stdin.send(line)

            async def stop_on_request() -> None:
                await self.stopping.wait()
                await _stop(process, self.config.grace + _KILL_MARGIN, agent.id, self.output)

            tg.start_soon(stop_on_request)
            code = await process.wait()
            # Its output is read to the end (its last words) before the relays go; bounded,
            # as a grandchild may hold the pipes open.
            with anyio.move_on_after(1):
                for done in relays_done:
                    await done.wait()
            tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await process.aclose()
        return code


# What a stopping agent gets beyond its grace to disconnect before it is killed.
_KILL_MARGIN = 2.0


async def _stop(process: Process, limit: float, agent_id: str, output: _Output) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    with anyio.move_on_after(limit):
        await process.wait()
        return
    output.note(f"did not stop within {limit:g} s of SIGTERM: killed", agent_id, level="WARNING")
    process.kill()


async def _supervise_all(
    config: RunConfig, agents: Sequence[AgentFile], address: str, output: _Output
) -> bool:
    """Supervise ``agents`` until a signal or until none is left; whether all could run."""
    from ._agent_host import HostConfig

    host = HostConfig(
        address=address,
        token=config.token,
        tls=config.tls,
        log_level=config.log_level,
        log_format=config.log_format,
        traceback=config.traceback,
        grace=config.grace,
        connect_timeout=config.connect_timeout,
        id_wait=config.id_wait,
        otlp_endpoint=config.otlp_endpoint,
        trace_sample=config.trace_sample,
    )
    supervisor = _Supervisor(config, host, output)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:

            async def on_signal() -> None:
                async for signum in signals:
                    output.note(f"{signal.Signals(signum).name} received: stopping the agents")
                    supervisor.stopping.set()
                    return

            async def all_agents() -> None:
                async with anyio.create_task_group() as agents_tg:
                    for agent in agents:
                        agents_tg.start_soon(supervisor.supervise, agent)
                tg.cancel_scope.cancel()  # every agent ended (stopped by itself, or by us)

            tg.start_soon(on_signal)
            tg.start_soon(all_agents)
    return not supervisor.failed


async def run(config: RunConfig) -> int:
    """Run ``config.paths`` until SIGINT/SIGTERM or until every agent has stopped.

    Returns:
        The exit code: 0, or 1 when an agent could not run (not restarted; see the module
        docs).

    Raises:
        RunError: the agents cannot be found (nothing was started).
    """
    agents = await discover(config.paths)
    names = ", ".join(a.id for a in agents)
    output = _Output(config.log_format, config.log_level)
    if not config.embedded:
        output.note(f"{names} -> {config.address}")
        return 0 if await _supervise_all(config, agents, config.address, output) else 1

    durable = [a.id for a in agents if a.durable]
    if durable:
        # Said now, once, rather than as each agent's refused registration (exit code 3).
        raise RunError(
            f"{', '.join(durable)}: durable (Agent(durable=True)), but the embedded server of "
            "loom run --embedded is memory only (no NATS): run them against loom serve"
        )

    from loom.bridge import BridgeServer
    from loom.runtime import AgentRuntime, EventBus

    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        BridgeServer(runtime, port=config.port, token=config.token) as server,
    ):
        # The address goes to stdout, like loom serve's, for scripts that want to connect.
        print(
            f"loom run: embedded server listening on {server.address} "
            "(memory only: no NATS, nothing durable; loom serve for that)",
            flush=True,
        )
        output.note(names)
        ok = await _supervise_all(config, agents, server.address, output)
    return 0 if ok else 1
