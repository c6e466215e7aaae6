"""What ``loom serve`` hosts on request: the native tools of ``[tools]`` and the cognitive
agents of ``[agents.<id>]``.

Both are decoded when the configuration is read (a mistake stops the server before it
listens, naming the table and the key) and built when the runtime is up: tools are registered
in the runtime's registry (so every agent, ``ForwardToolCall``, ``ToolService.Call`` and
``loom call`` can use them), agents are started and supervised by the runtime like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from loom.runtime import ConfigError, InvalidArgument
from loom.runtime.cognition import StrategyName
from loom.runtime.tools import (
    DEFAULT_SHELL_PROGRAMS,
    ClockNow,
    FsList,
    FsRead,
    FsWrite,
    HttpFetch,
    ShellExec,
    Tool,
    ToolRegistry,
    Workspace,
)

__all__ = [
    "AgentTable",
    "FsTable",
    "HttpTable",
    "ShellTable",
    "ToolsTable",
    "agent_data_dir",
    "agent_tools",
    "build_tools",
    "decode_agents",
    "decode_tools",
]


class FsTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[tools.fs]``: ``fs.read``, ``fs.list`` and (unless ``write = false``) ``fs.write``,
    confined to ``root``. ``approval``: whether ``fs.write`` waits for a human (default:
    ``always`` when the server listens beyond loopback; ``docs/guardrails.md``)."""

    root: str
    write: bool = True
    approval: Literal["always", "never"] | None = None


class ShellTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[tools.shell]``: ``shell.exec`` in ``root`` (default: ``[tools.fs]``'s), running only
    ``programs`` (default: the read-only text tools)."""

    root: str | None = None
    programs: tuple[str, ...] | None = None
    timeout_s: float = 10.0
    max_timeout_s: float = 60.0
    approval: Literal["always", "never"] | None = None  # as [tools.fs]'s, for shell.exec


class HttpTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[tools.http]``: ``http.fetch`` of ``allow_hosts`` only."""

    allow_hosts: tuple[str, ...]
    allow_private: bool = False


class ToolsTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[tools]``: the native tools the server offers. ``clock.now`` is on unless
    ``clock = false``; the others only when their table is present."""

    clock: bool = True
    fs: FsTable | None = None
    shell: ShellTable | None = None
    http: HttpTable | None = None


class AgentTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[agents.<id>]``: a :class:`~loom.CognitiveAgent` the server hosts.

    Attributes:
        llm: a provider of ``[llm]`` by name, or ``""`` for the router over all of them.
        system_prompt: its instructions.
        topics: the topics it answers (its mailbox always).
        tools: the server's tools it may call, by name, or ``"all"``.
        capabilities: other agents' capabilities it may call, by name, or ``"all"``.
        approval: an approval policy per tool name, over the server's (``docs/guardrails.md``).
        ask_user: offer the model ``ask_user(question)``: the turn waits for the user's answer
            (``loom answer ID TEXT``); ``ask_user_timeout_s``: how long (default
            ``[approvals] timeout_s``).
    """

    llm: str = ""
    system_prompt: str = ""
    topics: tuple[str, ...] = ()
    tools: tuple[str, ...] | Literal["all"] = ()
    capabilities: tuple[str, ...] | Literal["all"] = ()
    strategy: StrategyName | None = None
    max_iterations: int | None = None
    max_parallel_tools: int | None = None
    tool_timeout_s: float | None = None
    max_concurrency: int = 1
    mailbox_size: int = 1000
    approval: dict[str, Literal["always", "never"]] = msgspec.field(default_factory=dict)
    ask_user: bool = False
    ask_user_timeout_s: float | None = None


def decode_tools(table: Any, *, where: str) -> ToolsTable:
    """``[tools]`` of ``loom.toml``.

    Raises:
        ConfigError: an unknown key or a wrong type, naming the table.
    """
    try:
        tools = msgspec.convert(table, ToolsTable)
    except msgspec.ValidationError as exc:
        raise _problem(where, "tools", exc) from None
    if tools.shell is not None and tools.shell.root is None and tools.fs is None:
        raise ConfigError(f"{where} [tools.shell]: set root (or [tools.fs] root, which it uses)")
    return tools


def decode_agents(
    table: Any, *, where: str, llm_names: Sequence[str] | None
) -> dict[str, AgentTable]:
    """``[agents.<id>]`` of ``loom.toml``; ``llm_names``: the ``[llm]`` providers (``None``:
    no ``[llm]`` table).

    Raises:
        ConfigError: an unknown key, a wrong type, or an ``llm`` that names no provider.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{where} [agents]: must be a table of [agents.<id>] tables")
    agents: dict[str, AgentTable] = {}
    for agent_id, fields in table.items():
        try:
            agent = msgspec.convert(fields, AgentTable)
        except msgspec.ValidationError as exc:
            raise _problem(where, f"agents.{agent_id}", exc) from None
        if llm_names is None:
            raise ConfigError(
                f"{where} [agents.{agent_id}]: needs a model: add an [llm.<name>] table"
            )
        if agent.llm and agent.llm not in llm_names:
            raise ConfigError(
                f"{where} [agents.{agent_id}]: llm = {agent.llm!r} names no [llm] provider "
                f"(have: {', '.join(llm_names)})"
            )
        agents[agent_id] = agent
    return agents


def _problem(where: str, table: str, exc: msgspec.ValidationError) -> ConfigError:
    """msgspec says ``Object contains unknown field `rot` - at `$.fs```: say it as TOML does,
    ``loom.toml [tools.fs]: Object contains unknown field rot``."""
    message, _, at = str(exc).partition(" - at `$")
    return ConfigError(f"{where} [{table}{at.rstrip('`')}]: {message.replace('`', '')}")


def build_tools(table: ToolsTable) -> list[Tool]:
    """The tools ``table`` asks for, ready to register.

    Raises:
        ConfigError: a root that is not a directory, or a program that is not installed.
    """
    tools: list[Tool] = [ClockNow()] if table.clock else []
    try:
        if table.fs is not None:
            root = Workspace(table.fs.root)
            tools += [FsRead(root), FsList(root)]
            if table.fs.write:
                tools.append(FsWrite(root))
        if table.shell is not None:
            shell = table.shell
            where = shell.root if shell.root is not None else table.fs.root  # type: ignore[union-attr]
            tools.append(
                ShellExec(
                    Workspace(where),
                    allow=shell.programs if shell.programs is not None else DEFAULT_SHELL_PROGRAMS,
                    timeout=shell.timeout_s,
                    max_timeout=shell.max_timeout_s,
                )
            )
        if table.http is not None:
            tools.append(
                HttpFetch(
                    allow_hosts=table.http.allow_hosts, allow_private=table.http.allow_private
                )
            )
    except InvalidArgument as exc:
        raise ConfigError(f"[tools]: {exc}") from None
    return tools


def agent_tools(
    agent_id: str, table: AgentTable, registry: ToolRegistry
) -> ToolRegistry | list[Tool]:
    """The server tools ``[agents.<id>]`` may call.

    Raises:
        ConfigError: a name that is no tool of the server.
    """
    if table.tools == "all":
        return registry
    missing = [name for name in table.tools if name not in registry]
    if missing:
        have = ", ".join(sorted(t.name for t in registry.list())) or "none"
        raise ConfigError(
            f"[agents.{agent_id}] tools: no tool {', '.join(map(repr, missing))} on this server "
            f"(have: {have})"
        )
    return [registry.get(name) for name in table.tools]


def agent_data_dir(data_dir: Path, agent_id: str) -> Path:
    """Where a hosted agent keeps its conversations: ``<data-dir>/agents/<id>``."""
    return data_dir / "agents" / agent_id
