"""Tenants: bearer tokens that confine their holders to a namespace.

A server may hold, next to its shared token and its admin token, any number of tenant tokens,
each naming a namespace (``loom.toml``: ``[tokens.<name>] token_env = "...", namespace =
"team-a"``). A caller that shows one is confined to that namespace: it publishes, subscribes,
registers, calls and lists only what is inside it (``bridge/_identity.py`` asks
:func:`topic_inside`, :func:`agent_inside`, :func:`tool_inside`).

What is inside namespace ``N``, derived from the name alone so that every node of a cluster,
and a NATS account later, decides it the same way without a table:

* **Topics** whose first segment is ``N``: ``N``, ``N.orders.created``, patterns ``N.>``.
* **Agent ids** ``N:<name>`` (``:`` may appear in an agent id but not in a namespace, so the
  namespace of an id is unambiguous: the text before its first ``:``).
* **Tools** named ``N.<name>`` (a tool name may hold dots): the capabilities a tenant's
  agents declare, and an MCP server the operator names ``N``.
* **The system topics of its agents**: ``agent.N:<name>`` and below (mailbox, replies,
  ``stream``), ``loom.deadletter.N:<name>``, and for reading ``loom.dlq.N:<name>...`` and
  ``loom.lifecycle.N:<name>``; and its barriers, ``loom.barrier.N...`` (barrier names
  ``N.<name>``).

Anything else (``>``, ``agent.>``, ``_inbox.x``, another namespace's topics) is outside. A
wildcard where the namespace is decided (the first segment, or the agent id's) is outside
too: it would match other namespaces' topics.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from typing import Final

import msgspec

from loom.runtime import BusStats, Drops, InvalidArgument

__all__ = [
    "NAMESPACE_SEPARATOR",
    "Tenant",
    "Tenants",
    "agent_inside",
    "agent_namespace",
    "namespace_stats",
    "tool_inside",
    "topic_inside",
    "topic_namespace",
    "validate_namespace",
]

NAMESPACE_SEPARATOR: Final = ":"
"""Between a namespace and the rest of an agent id: ``team-a:planner``."""

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# First segments that are the system's own: a namespace of that name would own them.
_RESERVED = frozenset(("agent", "loom"))
# loom.<kind>.<agent id>...: system topics whose third segment is an agent's id.
_AGENT_SYSTEM_TOPICS = frozenset(("deadletter", "dlq", "lifecycle"))


def validate_namespace(namespace: str) -> str:
    """A namespace is one topic segment and one NATS subject token, and names no system topic.

    Raises:
        InvalidArgument: it is not 1-64 letters, digits, ``_`` or ``-`` starting with a
            letter or digit, or it is ``agent`` or ``loom``.
    """
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise InvalidArgument(
            f"invalid namespace {namespace!r}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    if namespace in _RESERVED:
        raise InvalidArgument(f"namespace {namespace!r} is reserved for the system's topics")
    return namespace


def agent_namespace(agent_id: str) -> str | None:
    """The namespace agent ``agent_id`` is in (``team-a`` for ``team-a:planner``), or ``None``."""
    namespace, sep, _ = agent_id.partition(NAMESPACE_SEPARATOR)
    return namespace if sep and namespace else None


def topic_namespace(topic: str) -> str | None:
    """The namespace that owns ``topic`` (a concrete topic or a pattern), or ``None`` when no
    single one does (a system topic of no namespaced agent, or a wildcard where the owner is
    decided).

    This is what a node mapping Loom topics to NATS subjects would put first to give each
    tenant a subject space of its own (``docs/cluster.md``, "Tenants").
    """
    segments = topic.split(".", 3)
    first = segments[0]
    if first == "agent":
        return agent_namespace(segments[1]) if len(segments) > 1 else None
    if first == "loom":
        if len(segments) > 2 and segments[1] in _AGENT_SYSTEM_TOPICS:
            return agent_namespace(segments[2])
        if len(segments) > 2 and segments[1] == "barrier":
            # A barrier (ctx.collab.arrive) named "N.<name>": the server's coordinator, on
            # loom.barrier.>, answers in the arriving agent's own mailbox.
            return segments[2]
        return None
    if first in ("*", ">") or first.startswith("_"):
        return None
    return first


def topic_inside(namespace: str, topic: str) -> bool:
    """Whether every topic ``topic`` (concrete or a pattern) names is inside ``namespace``."""
    return topic_namespace(topic) == namespace


def agent_inside(namespace: str, agent_id: str) -> bool:
    """Whether agent ``agent_id`` is inside ``namespace``."""
    return agent_namespace(agent_id) == namespace


def tool_inside(namespace: str, tool: str) -> bool:
    """Whether the tool named ``tool`` is inside ``namespace`` (``team-a.summarize``)."""
    return tool.startswith(namespace + ".")


class Tenant(msgspec.Struct, frozen=True, kw_only=True):
    """One tenant token.

    Attributes:
        name: what the configuration calls it (``[tokens.<name>]``): named in logs, never
            the token.
        token: the bearer token its clients show.
        namespace: the namespace it confines them to.
    """

    name: str
    token: str
    namespace: str

    def __post_init__(self) -> None:
        if not self.token:
            raise InvalidArgument(f"tenant token {self.name!r}: the token must not be empty")
        validate_namespace(self.namespace)

    def __repr__(self) -> str:  # never the token, in a log or a traceback
        return f"Tenant(name={self.name!r}, namespace={self.namespace!r})"


class Tenants:
    """The server's tenant tokens: which namespace a bearer token confines its caller to."""

    def __init__(self, tenants: Iterable[Tenant] = ()) -> None:
        self.tenants = tuple(tenants)
        seen: dict[str, str] = {}
        for tenant in self.tenants:
            if tenant.token in seen:
                raise InvalidArgument(
                    f"tenant tokens {seen[tenant.token]!r} and {tenant.name!r} are the same "
                    "token: each namespace needs its own"
                )
            seen[tenant.token] = tenant.name
        self._bearers = tuple((f"Bearer {t.token}".encode(), t.namespace) for t in self.tenants)
        self.namespaces = frozenset(t.namespace for t in self.tenants)

    def __bool__(self) -> bool:
        return bool(self.tenants)

    def namespace_of(self, bearer: bytes) -> str | None:
        """The namespace of the tenant whose token ``bearer`` (``Bearer <token>``, scheme
        normalised) is, else ``None``. Every token is compared, in constant time each, so
        how long it takes says nothing of which one matched."""
        found = None
        for expected, namespace in self._bearers:
            if hmac.compare_digest(bearer, expected):
                found = namespace
        return found

    def claimed(self, name: str, *, tool: bool = False) -> str | None:
        """The configured namespace an agent id (or, with ``tool``, a tool name) is in, if
        any: a caller outside that namespace may not take it."""
        namespace = name.partition(".")[0] if tool else agent_namespace(name)
        return namespace if namespace in self.namespaces else None


def namespace_stats(stats: BusStats, namespace: str) -> BusStats:
    """What a tenant of ``namespace`` sees of the bus's counters: the records of its topics
    and subscriptions (every pattern inside it), and totals summed from those topics, so
    nothing says how much traffic the other namespaces have."""
    topics = tuple(t for t in stats.topics if topic_inside(namespace, t.topic))
    subscriptions = tuple(
        s
        for s in stats.subscriptions
        if all(topic_inside(namespace, p) for p in (s.patterns or (s.pattern,)))
    )
    return BusStats(
        published=sum(t.published for t in topics),
        unrouted=sum(t.unrouted for t in topics),
        delivered=sum(t.delivered for t in topics),
        dropped=Drops(
            overflow=sum(t.dropped.overflow for t in topics),
            closed=sum(t.dropped.closed for t in topics),
            bytes=sum(t.dropped.bytes for t in topics),
        ),
        subscriptions=subscriptions,
        topics=topics,
        closed=stats.closed,
    )
