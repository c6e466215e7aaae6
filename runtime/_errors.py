"""The one exception tree of Loom.

Every error Loom raises on purpose derives from :class:`LoomError`. Where a builtin or anyio
exception already carries the meaning, it is mixed in so that ``except TimeoutError`` or
``except anyio.WouldBlock`` keeps working. Cancellation is never wrapped.
"""

from __future__ import annotations

import anyio

__all__ = [
    "BusClosed",
    "ConfigError",
    "DeadlineExceeded",
    "DurabilityUnavailable",
    "InvalidArgument",
    "InvalidTopic",
    "LoomError",
    "SubscriptionClosed",
    "TTLExpired",
    "WouldBlock",
]


class LoomError(Exception):
    """Base of every error Loom raises on purpose."""


class InvalidArgument(LoomError, ValueError):
    """An argument is out of its allowed range or of the wrong kind; nothing was done.

    The general case: a bad value handed to any Loom API. A tool call's arguments that fail
    the tool's schema are the subclass ``loom.runtime.tools.InvalidToolArguments``.
    """


class InvalidTopic(InvalidArgument):
    """A topic or subscription pattern is malformed.

    Attributes:
        topic: the offending topic or pattern, as given.
        reason: what is wrong with it, in words.
    """

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"invalid topic {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


class ConfigError(InvalidArgument):
    """A configuration (a TOML table, a flag, an environment variable) is invalid; nothing was
    started. The message names the source and the key.

    The parent of every configuration error (``LLMConfigError``, ``McpConfigError``, those of
    ``loom serve``), so that one ``except ConfigError`` catches them all.
    """


class BusClosed(LoomError):
    """The event bus is closing or closed and refuses the operation."""


class SubscriptionClosed(LoomError):
    """The subscription was closed (by its owner or by the bus) and has nothing left to give."""


class WouldBlock(LoomError, anyio.WouldBlock):
    """A ``*_nowait`` operation would have had to wait; nothing was done."""


class DeadlineExceeded(LoomError, TimeoutError):
    """An operation did not finish before its deadline."""


class DurabilityUnavailable(LoomError):
    """Something durable (a durable subscription, a replay) was asked of a bus with no durable
    log: a ``loom serve`` started with ``--nats off`` (memory only), or an ``EventBus`` made
    without ``durable_log=``. Nothing was subscribed.

    Attributes:
        what: what was asked, in words (``"durable subscription 'orders'"``).
    """

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} needs durability, and this bus has none: `loom serve` embeds a NATS "
            "server with JetStream by default (not with --nats off) or uses --nats URL; in "
            "your own process pass EventBus(durable_log=loom.cluster.JetStreamLog(...))"
        )
        self.what = what


class TTLExpired(LoomError):
    """An event used up its hop budget and must not travel further.

    Attributes:
        event_id: the id of the expired event.
        ttl: its hop budget.
        hop: the hops it had already taken.
    """

    def __init__(self, event_id: str, ttl: int, hop: int) -> None:
        super().__init__(f"event {event_id} expired: {hop} hops taken of a budget of {ttl}")
        self.event_id = event_id
        self.ttl = ttl
        self.hop = hop
