"""The directory: who is there, what they listen to, what they can do, how busy they are."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

import anyio
import msgspec

from ._topics import pattern_matches, validate_pattern, validate_topic

__all__ = ["AgentInfo", "AgentStatus", "Directory"]


class AgentStatus(enum.Enum):
    """An agent's lifecycle state (published on ``loom.lifecycle.{agent_id}``)."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    STALE = "stale"
    """A remote agent whose heartbeats stopped arriving; it may come back."""
    DISCONNECTED = "disconnected"
    """A remote agent whose stream ended."""


class AgentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one directory entry.

    Attributes:
        id: the agent id.
        status: its lifecycle state.
        patterns: the topic patterns it subscribes to (its mailbox topic included).
        capabilities: names of the tools it offers.
        remote: whether it lives in another process (connected through the bridge).
        last_heartbeat_ms: when it was last seen alive (Unix ms).
        mailbox_depth: events waiting in its mailbox now.
        in_flight: tool calls it is running now.
        restarts: how often it has been restarted.
        metadata: free key/values it registered with.
        node: the ``loom serve`` node it lives on (``""``: a runtime outside any cluster).
            An agent of another node appears as a remote agent marked with that node.
    """

    id: str
    status: AgentStatus
    patterns: tuple[str, ...]
    capabilities: tuple[str, ...]
    remote: bool
    last_heartbeat_ms: int
    mailbox_depth: int
    in_flight: int
    restarts: int
    metadata: Mapping[str, str]
    node: str = ""


def _zero() -> int:
    return 0


_NO_METADATA: Mapping[str, str] = MappingProxyType({})


class _Entry:
    __slots__ = (
        "capabilities",
        "depth",
        "id",
        "in_flight",
        "last_heartbeat_ms",
        "metadata",
        "node",
        "patterns",
        "remote",
        "restarts",
        "status",
    )

    def __init__(self, agent_id: str, remote: bool, metadata: Mapping[str, str], node: str) -> None:
        self.id = agent_id
        self.remote = remote
        self.node = node
        # Shared, not copied, when empty: a hundred thousand idle agents have no metadata.
        self.metadata: Mapping[str, str] = dict(metadata) if metadata else _NO_METADATA
        self.status = AgentStatus.CREATED
        self.patterns: list[str] = []
        self.capabilities: frozenset[str] = frozenset()
        self.last_heartbeat_ms = time.time_ns() // 1_000_000
        self.depth: Callable[[], int] = _zero
        self.in_flight = 0
        self.restarts = 0

    def info(self) -> AgentInfo:
        return AgentInfo(
            id=self.id,
            status=self.status,
            patterns=tuple(self.patterns),
            capabilities=tuple(sorted(self.capabilities)),
            remote=self.remote,
            last_heartbeat_ms=self.last_heartbeat_ms,
            mailbox_depth=self.depth(),
            in_flight=self.in_flight,
            restarts=self.restarts,
            metadata=self.metadata,
            node=self.node,
        )


class Directory:
    """Every agent a runtime knows, local and remote.

    Lookups by id, by capability and by topic ("who would receive an event published on this
    concrete topic", wildcards included) return frozen :class:`AgentInfo` snapshots. The
    runtime and the bridge keep it up to date; applications read it.

    Args:
        receivers: answers "which agent ids would receive this topic". A runtime passes one
            that asks the bus's own routing trie, so the answer is exactly what the bus would
            do and no second trie is kept; without one, the entries' patterns are scanned.
        node: the node this directory's own agents live on (``AgentInfo.node``).
    """

    def __init__(
        self, receivers: Callable[[str], Iterable[str]] | None = None, *, node: str = ""
    ) -> None:
        self.node = node
        self._entries: dict[str, _Entry] = {}
        self._by_capability: dict[str, set[str]] = {}
        self._receivers = receivers
        self._changed: anyio.Event | None = None  # made by a waiter, set by the next change
        # Capabilities of agents expected back (a remote agent disconnected, until it returns
        # or is swept; a local one its supervisor is restarting, until it runs again or ends):
        # a call of one waits for a provider instead of failing at once (AgentRuntime.call_tool).
        self._lapsed: dict[str, set[str]] = {}

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def wait_changed(self) -> None:
        """Wait until an entry is added or removed, or changes status or capabilities."""
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    # ------------------------------------------------------------------ writes (runtime/bridge)

    def add(
        self,
        agent_id: str,
        *,
        remote: bool = False,
        metadata: Mapping[str, str] = {},
        node: str | None = None,
    ) -> None:
        """Add an entry (status ``created``); replaces nothing. ``node``: where it lives
        (``None``: this directory's own node).

        Raises:
            KeyError: the id is taken.
        """
        if agent_id in self._entries:
            raise KeyError(agent_id)
        where = self.node if node is None else node
        self._entries[agent_id] = _Entry(agent_id, remote, metadata, where)
        self._notify()

    def remove(self, agent_id: str, *, returning: bool = False) -> None:
        """Remove an entry and every index of it; unknown ids are ignored. ``returning``:
        it is added again at once (a remote agent reconnecting), so what it offered before
        still counts in :meth:`has_provider` until it declares its tools."""
        entry = self._entries.pop(agent_id, None)
        if entry is None:
            return
        self._set_capabilities(entry, ())
        if not returning:
            self._forget_lapsed(agent_id)
        self._notify()

    def withdraw_capabilities(self, agent_id: str) -> None:
        """The agent (a remote one whose connection ended, a local one between two instances)
        offers nothing now, but is expected back: its capabilities still count in
        :meth:`has_provider` until it offers them again or :meth:`forget_capabilities`."""
        entry = self._entries[agent_id]
        for name in entry.capabilities:
            self._lapsed.setdefault(name, set()).add(agent_id)
        self.set_capabilities(agent_id, ())

    def forget_capabilities(self, agent_id: str) -> None:
        """The agent is not coming back (it stopped or failed for good): what it offered
        before no longer counts in :meth:`has_provider`, and waiting calls learn it."""
        self._forget_lapsed(agent_id)
        self._notify()

    def _forget_lapsed(self, agent_id: str) -> None:
        for name in [n for n, ids in self._lapsed.items() if agent_id in ids]:
            ids = self._lapsed[name]
            ids.discard(agent_id)
            if not ids:
                del self._lapsed[name]

    def has_provider(self, capability: str) -> bool:
        """Whether an agent offers ``capability``, running or not (restarting, stopped, or
        a remote one disconnected and not yet removed)."""
        return bool(self._by_capability.get(capability) or self._lapsed.get(capability))

    def set_status(self, agent_id: str, status: AgentStatus) -> None:
        self._entries[agent_id].status = status
        self._notify()

    def add_pattern(self, agent_id: str, pattern: str) -> None:
        entry = self._entries[agent_id]
        if pattern not in entry.patterns:
            validate_pattern(pattern)
            entry.patterns.append(pattern)

    def remove_pattern(self, agent_id: str, pattern: str) -> None:
        entry = self._entries[agent_id]
        if pattern in entry.patterns:
            entry.patterns.remove(pattern)

    def set_capabilities(self, agent_id: str, names: Iterable[str]) -> None:
        entry = self._entries[agent_id]
        self._set_capabilities(entry, names)
        if entry.capabilities:
            self._forget_lapsed(agent_id)
        self._notify()

    def _set_capabilities(self, entry: _Entry, names: Iterable[str]) -> None:
        for name in entry.capabilities:
            holders = self._by_capability[name]
            holders.discard(entry.id)
            if not holders:
                del self._by_capability[name]
        entry.capabilities = frozenset(names)
        for name in entry.capabilities:
            self._by_capability.setdefault(name, set()).add(entry.id)

    def set_depth_probe(self, agent_id: str, probe: Callable[[], int]) -> None:
        """How to read the agent's mailbox depth when a snapshot is taken."""
        self._entries[agent_id].depth = probe

    def count_restart(self, agent_id: str) -> None:
        self._entries[agent_id].restarts += 1

    def add_in_flight(self, agent_id: str, delta: int) -> None:
        entry = self._entries.get(agent_id)
        if entry is not None:
            entry.in_flight += delta

    def heartbeat(self, agent_id: str, *, now_ms: int | None = None) -> None:
        """Record that the agent is alive; a ``stale`` agent becomes ``running`` again."""
        entry = self._entries[agent_id]
        entry.last_heartbeat_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if entry.status is AgentStatus.STALE:
            entry.status = AgentStatus.RUNNING

    def sweep(self, *, stale_after_s: float, now_ms: int | None = None) -> list[str]:
        """Mark running remote agents whose last heartbeat is older than ``stale_after_s`` as
        ``stale``; return their ids. Local agents are alive while their task runs."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        limit = now - int(stale_after_s * 1000)
        stale = []
        for entry in self._entries.values():
            if (
                entry.remote
                and entry.status is AgentStatus.RUNNING
                and entry.last_heartbeat_ms < limit
            ):
                entry.status = AgentStatus.STALE
                stale.append(entry.id)
        return stale

    # ------------------------------------------------------------------ reads

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, agent_id: str) -> AgentInfo | None:
        """The agent's snapshot, or ``None``."""
        entry = self._entries.get(agent_id)
        return None if entry is None else entry.info()

    def all(self) -> list[AgentInfo]:
        """Every agent, in the order they were added."""
        return [entry.info() for entry in self._entries.values()]

    def by_capability(self, name: str) -> list[AgentInfo]:
        """Agents offering the capability ``name``."""
        return [self._entries[i].info() for i in sorted(self._by_capability.get(name, ()))]

    def by_topic(self, topic: str) -> list[AgentInfo]:
        """Agents that would receive an event published on the concrete ``topic``.

        Raises:
            InvalidTopic: ``topic`` is not a valid concrete topic.
        """
        validate_topic(topic)
        if self._receivers is not None:
            ids: Iterable[str] = dict.fromkeys(self._receivers(topic))
        else:
            ids = [
                e.id
                for e in self._entries.values()
                if any(pattern_matches(p, topic) for p in e.patterns)
            ]
        return [self._entries[i].info() for i in ids if i in self._entries]

    def least_busy(self, capability: str) -> AgentInfo | None:
        """Of the running agents offering ``capability``, the one with the least work queued
        and in flight (ties: the fewest restarts, then the id); ``None`` if there is none."""
        best: _Entry | None = None
        best_key: tuple[int, int, str] | None = None
        for agent_id in self._by_capability.get(capability, ()):
            entry = self._entries[agent_id]
            if entry.status is not AgentStatus.RUNNING:
                continue
            key = (entry.depth() + entry.in_flight, entry.restarts, entry.id)
            if best_key is None or key < best_key:
                best, best_key = entry, key
        return None if best is None else best.info()
