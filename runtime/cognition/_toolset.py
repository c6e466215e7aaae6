"""The tools one turn of the loop may use, gathered from where they live.

A :class:`Toolset` assembles tools from three kinds of place:

* **registries**: a :class:`~loom.runtime.tools.ToolRegistry` of the agent (or the runtime's
  own); calls go through it, so its validation, timeouts and concurrency limits apply;
* **loose tools**: any :class:`~loom.runtime.tools.Tool` (an MCP server's tools, a
  ``FunctionTool``), registered in a private registry of the toolset;
* **peers**: capabilities of other agents, found in an :class:`AgentRuntime`'s directory by
  name and called through :meth:`AgentRuntime.call_tool` (the least busy agent offering one).

Availability changes while a runtime runs (agents start and stop), so a turn takes a
:meth:`Toolset.snapshot` when it begins and keeps it to the end: the model sees the same tool
names, and so the same wire names, on every iteration of the turn. When two places offer the
same name, the first place added wins (registries, then loose tools, then peers, each in the
order given); the others are not offered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..tools import JSONObject, Tool, ToolNotFound, ToolRegistry, ToolSpec

if TYPE_CHECKING:
    from .._context import Context
    from .._runtime import AgentRuntime

__all__ = ["PeerCapabilities", "PeerSource", "RemotePeers", "ToolCaller", "Toolset", "TurnTools"]

log = logging.getLogger("loom.runtime.loop")


class ToolCaller(Protocol):
    """Calls a tool by name: ``AgentRuntime.call_tool`` or a handler's ``ctx.tool``."""

    def __call__(
        self, name: str, arguments: Mapping[str, Any], *, timeout: float | None
    ) -> Awaitable[Any]: ...


_Call = Callable[[str, Mapping[str, Any], "float | None"], Awaitable[Any]]


class PeerCapabilities:
    """Capabilities of the agents of a runtime, offered to the model as tools.

    A capability is described (name, description, schema) by the running agent that offers it
    and called through ``caller`` (default: ``runtime.call_tool``, which picks the least busy
    agent offering the name and falls back to the runtime's own registry).

    Args:
        runtime: the runtime whose directory is searched.
        names: the capability names to offer, or ``"all"`` for every capability of every
            running agent. A name no running agent offers is left out of the turn; with
            ``include_runtime_tools`` it may still come from the runtime's own registry.
        exclude_agent: an agent whose capabilities are not offered (the agent running the
            loop, so that it does not call itself by accident).
        include_runtime_tools: also offer the tools of ``runtime.tools`` (native, MCP).
        caller: how to call a capability; a handler passes ``ctx.tool``.
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        names: Iterable[str] | Literal["all"] = "all",
        *,
        exclude_agent: str | None = None,
        include_runtime_tools: bool = False,
        caller: ToolCaller | None = None,
    ) -> None:
        self._runtime = runtime
        self._names: tuple[str, ...] | None = None if names == "all" else tuple(names)
        self._exclude = exclude_agent
        self._include_runtime_tools = include_runtime_tools
        self._caller: ToolCaller = caller if caller is not None else runtime.call_tool

    @classmethod
    def of_context(
        cls,
        ctx: Context,
        names: Iterable[str] | Literal["all"] = "all",
        *,
        include_runtime_tools: bool = False,
    ) -> PeerCapabilities | None:
        """The capabilities seen from a handler's ``ctx``, or ``None`` when the agent is not
        hosted in process (a remote agent cannot read the runtime's directory yet)."""
        runtime = ctx.runtime
        if runtime is None:
            return None
        return cls(runtime, names, include_runtime_tools=include_runtime_tools)

    def tools(self) -> list[Tool]:
        """The capabilities offered now, described by one running agent each."""
        runtime = self._runtime
        directory = runtime.directory
        if self._names is None:
            wanted = sorted({c for info in directory.all() for c in info.capabilities})
            if self._include_runtime_tools:
                wanted += [t.name for t in runtime.tools.list() if t.name not in wanted]
        else:
            wanted = list(dict.fromkeys(self._names))
        found: list[Tool] = []
        for name in wanted:
            tool = self._describe(name)
            if tool is not None:
                found.append(_PeerTool(tool, self._caller))
        return found

    def _describe(self, name: str) -> Tool | None:
        return self._runtime.describe_tool(
            name, exclude=self._exclude, include_runtime_tools=self._include_runtime_tools
        )


class PeerSource(Protocol):
    """Where a toolset finds other agents' tools: :class:`PeerCapabilities` (in process) or
    :class:`RemotePeers` (through the bridge)."""

    def tools(self) -> list[Tool]: ...


class RemotePeers:
    """The tools a handler's ``ctx`` can call, for an agent connected through the bridge:
    other agents' capabilities and the server's own tools (native, MCP), as the server lists
    them (``ctx.list_tools``), called through ``ctx.tool``.

    Listing needs a round trip, so it is not done by :meth:`tools`: call :meth:`refresh`
    before a turn (``CognitiveAgent`` does) and every turn sees the list as it was then.

    Args:
        ctx: the handler's context.
        names: the tool names to offer, or ``"all"``.
    """

    def __init__(self, ctx: Context, names: Iterable[str] | Literal["all"] = "all") -> None:
        self._ctx = ctx
        self._names: frozenset[str] | None = None if names == "all" else frozenset(names)
        self._tools: list[Tool] = []

    async def refresh(self) -> None:
        """List the tools again (one ``ToolService.ListTools`` round trip)."""
        found: list[Tool] = []
        for spec in await self._ctx.list_tools():
            if self._names is None or spec.name in self._names:
                found.append(_PeerTool(_Described(spec), self._ctx.tool))
        self._tools = found

    def tools(self) -> list[Tool]:
        return list(self._tools)


class _Described:
    """A tool known by its description only; it is always called through its route."""

    __slots__ = ("_spec",)

    def __init__(self, spec: ToolSpec) -> None:
        self._spec = spec

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def description(self) -> str:
        return self._spec.description

    @property
    def parameters_schema(self) -> JSONObject:
        return self._spec.parameters_schema

    async def call(self, arguments: JSONObject) -> Any:
        raise ToolNotFound(self._spec.name)  # never reached: peers are called via their caller


class _PeerTool:
    """A capability described by its owner and called through the runtime."""

    __slots__ = ("_caller", "_tool")

    routes_calls = True
    """Its call is the route of the turn's call (``enter_tool_body``): counted once, there."""

    def __init__(self, tool: Tool, caller: ToolCaller) -> None:
        self._tool = tool
        self._caller = caller

    @property
    def name(self) -> str:
        return self._tool.name

    @property
    def description(self) -> str:
        return self._tool.description

    @property
    def parameters_schema(self) -> JSONObject:
        return self._tool.parameters_schema

    async def call(self, arguments: JSONObject, *, timeout: float | None = None) -> Any:
        return await self._caller(self._tool.name, arguments, timeout=timeout)


class TurnTools:
    """The tools of one turn: fixed specs for the model and one way to call each name.

    Made by :meth:`Toolset.snapshot`; immutable.
    """

    __slots__ = ("_routes", "specs")

    def __init__(self, specs: tuple[ToolSpec, ...], routes: Mapping[str, _Call]) -> None:
        self.specs = specs
        """What the model is told, in offer order."""
        self._routes = routes

    def __contains__(self, name: object) -> bool:
        return name in self._routes

    def __len__(self) -> int:
        return len(self._routes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    async def call(
        self, name: str, arguments: Mapping[str, Any], *, timeout: float | None = None
    ) -> Any:
        """Call ``name`` where it lives.

        Raises:
            ToolNotFound: the name is not in this snapshot.
            ToolError: whatever the tool's registry (or the runtime) raises for the call.
        """
        route = self._routes.get(name)
        if route is None:
            raise ToolNotFound(name)
        return await route(name, arguments, timeout)


EMPTY_TOOLS = TurnTools((), {})


class Toolset:
    """Where a turn's tools come from; see the module docstring for the order of precedence.

    Args:
        registries: registries whose tools are offered and called through them.
        tools: loose tools (MCP tools, ``FunctionTool``\\ s, ``@capability`` functions) held in
            a private registry with ``default_timeout``.
        peers: other agents' capabilities.
        default_timeout: the private registry's default per-call timeout, in seconds.
    """

    def __init__(
        self,
        registries: Iterable[ToolRegistry] = (),
        *,
        tools: Iterable[Tool] = (),
        peers: PeerSource | None = None,
        default_timeout: float = 30.0,
    ) -> None:
        self._registries = list(registries)
        self._own = ToolRegistry(default_timeout=default_timeout)
        self._peers = peers
        for tool in tools:
            self.add(tool)

    def add(
        self, tool: Tool, *, timeout: float | None = None, max_concurrency: int | None = None
    ) -> None:
        """Offer one more tool (an MCP tool, say) from the toolset's own registry.

        ``timeout`` and ``max_concurrency`` default to the tool's own attributes of those
        names when it has them (``@capability`` tools do).

        Raises:
            InvalidArgument: the name is malformed or already added here.
            InvalidToolSchema: the tool's schema is not a JSON Schema of an object.
        """
        if timeout is None:
            timeout = getattr(tool, "timeout", None)
        if max_concurrency is None:
            max_concurrency = getattr(tool, "max_concurrency", None)
        self._own.register(tool, timeout=timeout, max_concurrency=max_concurrency)

    def add_registry(self, registry: ToolRegistry) -> None:
        """Offer every tool of ``registry`` (now and as it changes), called through it."""
        self._registries.append(registry)

    def snapshot(self) -> TurnTools:
        """The tools available now, fixed for one turn."""
        specs: list[ToolSpec] = []
        routes: dict[str, _Call] = {}

        def offer(tool: Tool, route: _Call) -> None:
            name = tool.name
            if name in routes:
                log.debug("tool %r is offered twice; the first one is kept", name)
                return
            routes[name] = route
            specs.append(ToolSpec.from_tool(tool))

        for registry in (*self._registries, self._own):
            route = _registry_route(registry)
            for tool in registry.list():
                offer(tool, route)
        if self._peers is not None:
            for peer in self._peers.tools():
                offer(peer, _peer_route(peer))
        return TurnTools(tuple(specs), routes)


def _registry_route(registry: ToolRegistry) -> _Call:
    async def call(name: str, arguments: Mapping[str, Any], timeout: float | None) -> Any:
        return await registry.call(name, arguments, timeout=timeout)

    return call


def _peer_route(peer: Tool) -> _Call:
    assert isinstance(peer, _PeerTool)

    async def call(name: str, arguments: Mapping[str, Any], timeout: float | None) -> Any:
        return await peer.call(arguments, timeout=timeout)

    return call
