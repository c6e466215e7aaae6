"""The child side of ``loom run``: find the agents of a file, and host one of them.

``loom run`` (``sdk/cli/_runner.py``) starts this module as a subprocess, twice over:

* ``python -m loom.cli._agent_host list FILE...`` imports each file and prints, as its last
  stdout line, ``LOOM-AGENTS:`` and a JSON list of ``{"file", "id", "durable"}`` (or
  ``{"file", "error"}``).
* ``python -m loom.cli._agent_host run FILE AGENT_ID`` reads one JSON line of :class:`HostConfig`
  from stdin (so a token never shows in ``ps`` or the environment), connects the agent to the
  server (retrying the first connection until ``connect_timeout``; default forever), and
  serves until SIGINT or SIGTERM, until the agent stops or fails, or until stdin closes (the
  supervisor is gone). Its log goes to stderr, one line per connection change and per failure
  of the agent's code. A signal at any moment, even while the file is being imported, is a
  quiet stop with exit code 0.

  Exit codes: 0 stopped cleanly; 1 the agent failed or lost its server (a restart may help);
  2 the file or the agent cannot be loaded, 3 the server refused it for good (credentials,
  permission, a malformed option): a restart cannot help, and ``loom run`` does not try;
  4 an operator released its id while it ran: ``loom run`` does not restart it either.

Which objects are agents (the discovery rule)
---------------------------------------------
A file's agents are its **module-level variables bound to an** :class:`~loom.Agent`
**instance** (any subclass, e.g. ``CognitiveAgent``), in the order they are defined. Names
starting with ``_`` are skipped (so a helper instance can be hidden), an instance bound to two
names counts once, and agents inside lists, dicts or functions are not found. The file is
imported under a private module name, never as ``__main__``, so its
``if __name__ == "__main__": agent.run()`` block does not run: the same file works with
``python file.py`` and with ``loom run``. Its folder is put first on ``sys.path``, so it can
import its neighbours.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import anyio
import msgspec

from loom.bridge import ClientTLS
from loom.runtime import AgentStatus, LoomError

from .._agent import Agent
from .._logging import configure_logging

__all__ = ["LIST_MARKER", "HostConfig", "LoadError", "find_agents", "load_module", "main"]

LIST_MARKER = "LOOM-AGENTS:"

log = logging.getLogger("loom.run")


class LoadError(LoomError):
    """A file of agents cannot be imported, or holds no agent (or not the one asked for)."""


class HostConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What the supervisor hands a hosted agent (one JSON line on its stdin).

    Attributes:
        address: ``host:port`` of the server.
        token: the bearer token, if any.
        tls: TLS settings for the channel, if any.
        log_level: the level of the child's log on stderr.
        log_format: ``text`` (without a time: the supervisor stamps each line) or ``json``.
        traceback: log the tracebacks of the agent's own failures (else at ``debug`` only).
        grace: seconds a stop gives the handler and the capability calls in progress.
        connect_timeout: seconds the first connection is retried (``None``: forever).
        id_wait: seconds the first connection waits for the agent's id while a live
            connection has it (``ClientOptions.id_wait``).
        restarts: how often the supervisor has started this agent again after its process
            ended (``ClientOptions.process_restarts``: ``loom agents`` counts them).
        secret: the agent's registration secret, the same for every process the supervisor
            starts for it, so a restarted one takes the agent's id back at once.
        otlp_endpoint: ``--otlp-endpoint``: where its traces go (else ``OTEL_*`` decide).
        trace_sample: ``--trace-sample``: the share of new traces kept.
    """

    address: str
    token: str | None = None
    tls: ClientTLS | None = None
    log_level: str = "info"
    log_format: str = "text"
    traceback: bool = False
    grace: float = 5.0
    connect_timeout: float | None = None
    id_wait: float = 30.0
    restarts: int = 0
    secret: str | None = None
    otlp_endpoint: str | None = None
    trace_sample: float | None = None


def load_module(path: Path) -> ModuleType:
    """Import the file at ``path`` under a private name (see the module docs).

    Raises:
        LoadError: it does not exist, or importing it raised.
    """
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    name = "_loom_run_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and typing look modules up by name
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise LoadError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from exc
    return module


def find_agents(module: ModuleType) -> list[Agent]:
    """The module-level ``Agent`` instances of ``module`` (the discovery rule above).

    Raises:
        LoadError: two of them have the same id.
    """
    found: dict[int, Agent] = {}
    ids: dict[str, str] = {}
    for name, value in vars(module).items():
        if name.startswith("_") or not isinstance(value, Agent) or id(value) in found:
            continue
        if value.agent_id in ids:
            raise LoadError(
                f"{module.__file__}: {ids[value.agent_id]} and {name} are both agent "
                f"{value.agent_id!r}; agent ids must be unique"
            )
        ids[value.agent_id] = name
        found[id(value)] = value
    return list(found.values())


def _list(files: Sequence[str]) -> int:
    entries: list[dict[str, str | bool]] = []
    for file in files:
        try:
            agents = find_agents(load_module(Path(file)))
        except LoadError as exc:
            entries.append({"file": file, "error": str(exc)})
            continue
        if not agents:
            entries.append(
                {"file": file, "error": f"{file}: no module-level Agent instance (see loom run -h)"}
            )
        entries.extend({"file": file, "id": a.agent_id, "durable": a.durable} for a in agents)
    sys.stdout.flush()  # whatever the files printed comes first; the marker line is last
    print(LIST_MARKER + json.dumps(entries), flush=True)
    return 0


async def _until_stdin_closes() -> None:
    fd = sys.stdin.fileno()
    while True:
        await anyio.wait_readable(fd)
        if not os.read(fd, 4096):
            return


async def _host(agent: Agent, config: HostConfig) -> int:
    from loom.bridge import ClientOptions

    from .._process import Ended, run_agent
    from .._telemetry import trace_config

    options = ClientOptions(
        connect_timeout=math.inf if config.connect_timeout is None else config.connect_timeout,
        registration_secret=config.secret,
        id_wait=config.id_wait,
        process_restarts=config.restarts,
    )
    # The variables this process inherited from loom run (its environment is the user's).
    try:
        tracing = trace_config(
            os.environ,
            endpoint=config.otlp_endpoint,
            sample=config.trace_sample,
            service_name=agent.agent_id,
        )
    except LoomError as exc:  # a malformed OTEL_TRACES_SAMPLER: the same next time
        log.error("%s", exc)
        return 3
    ended = Ended(status=AgentStatus.STOPPED)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            nonlocal ended
            try:
                ended = await run_agent(
                    agent,
                    config.address,
                    token=config.token,
                    tls=config.tls,
                    options=options,
                    stop_timeout_s=config.grace,
                    tracing=tracing,
                )
            finally:
                tg.cancel_scope.cancel()

        async def stop_when_orphaned() -> None:
            await _until_stdin_closes()
            log.info("the supervisor went away: stopping")
            os.kill(os.getpid(), signal.SIGTERM)  # the same drain as a stop by loom run

        tg.start_soon(run)
        tg.start_soon(stop_when_orphaned)
    return ended.code


def _run(file: str, agent_id: str) -> int:
    line = sys.stdin.buffer.readline()
    try:
        config = msgspec.json.decode(line, type=HostConfig)
    except msgspec.DecodeError as exc:
        print(f"loom run: bad host configuration on stdin: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        config.log_level, config.log_format, traceback=config.traceback, timestamps=False
    )
    try:
        agents = {a.agent_id: a for a in find_agents(load_module(Path(file)))}
    except LoadError as exc:
        log.error("%s", exc)
        return 2
    agent = agents.get(agent_id)
    if agent is None:
        log.error("%s has no agent %r", file, agent_id)
        return 2
    return anyio.run(_host, agent, config)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the child process (``python -m loom.cli._agent_host``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "list":
        return _list(args[1:])
    if len(args) == 3 and args[0] == "run":
        # Until the agent's own handlers are up (the file may take long to import), a
        # SIGTERM is a KeyboardInterrupt like SIGINT: a stop at any moment is quiet, code 0.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            return _run(args[1], args[2])
        except KeyboardInterrupt:
            return 0
    print(
        "usage: python -m loom.cli._agent_host (list FILE... | run FILE AGENT_ID)", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
