"""The bridge server's limits: every one bounds memory or work, and each refusal says which."""

from __future__ import annotations

import math

import msgspec

from loom.runtime import DEFAULT_MAX_BUFFER_BYTES, InvalidArgument

__all__ = ["Limits"]


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """What one bridge server allows.

    Attributes:
        max_message_bytes: the largest gRPC message accepted or sent (gRPC refuses a larger
            incoming one with ``RESOURCE_EXHAUSTED``; a delivery too large to send is skipped
            with an ``Error`` frame).
        max_topics_per_agent: patterns one agent may hold: ``subscribed_topics`` plus stream
            subscriptions (its mailbox topic not counted).
        max_pending_tool_calls: tool calls pushed to one agent and not yet answered.
        max_agents: registered agents (connected or not); a registration over it first
            forgets the longest-registered disconnected agent.
        max_batch_events: the most events in one ``delivery_batch`` or ``publish_batch``.
        publish_window: the most publish credit a stream is granted.
        delivery_window: the most deliveries a stream with ``STREAM_FEATURE_DELIVERY_CREDIT``
            may have in flight (sent, not yet credited back), whatever it asks; one that
            names no window gets 1024 (or this, if less). The server keeps only their topics
            and sizes.
        delivery_window_bytes: the most bytes of deliveries (each its encoded ``Delivery``
            size) such a stream may have in flight, whatever it asks; one that names no byte
            window gets this. A single delivery larger than the window is sent alone, when
            nothing else is in flight (``max_message_bytes`` bounds it).
        tool_timeout_s: the timeout of a tool call that names none (``timeout_ms`` 0).
        max_subscription_buffer: the largest ``buffer_size`` a subscription may ask for.
        handshake_timeout_s: how long a new stream may take to send its handshake ``ack``.
        outbound_queue: frames other than deliveries (acks, pongs, pushed calls, results,
            errors) queued for one stream's writer before their producers wait; deliveries
            wait in their subscriptions.
        max_bus_subscribers: ``EventBus.Subscribe`` and ``EventBus.Replay`` calls open at once
            (``loom tail`` and other plain subscribers; agents' streams are counted by
            ``max_agents``).
        max_buffer_bytes: the byte bound of each of a stream's own queues (its publish lane
            and its outbound queue), next to their count bounds; what fills it waits like what
            finds the queue full (the stream's reader, then the client, is held back). The
            byte bound of the agents' subscriptions is the server bus's (``loom serve``
            gives both the same value).
    """

    max_message_bytes: int = 4 * 1024 * 1024
    max_topics_per_agent: int = 256
    max_pending_tool_calls: int = 1024
    max_agents: int = 10_000
    max_batch_events: int = 256
    publish_window: int = 1024
    delivery_window: int = 65_536
    delivery_window_bytes: int = DEFAULT_MAX_BUFFER_BYTES
    tool_timeout_s: float = 30.0
    max_subscription_buffer: int = 65_536
    handshake_timeout_s: float = 10.0
    outbound_queue: int = 1024
    max_bus_subscribers: int = 1024
    max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1024:
            raise InvalidArgument(
                f"max_message_bytes must be at least 1024, not {self.max_message_bytes}"
            )
        for name in (
            "max_topics_per_agent",
            "max_pending_tool_calls",
            "max_agents",
            "max_batch_events",
            "publish_window",
            "delivery_window",
            "delivery_window_bytes",
            "outbound_queue",
            "max_bus_subscribers",
            "max_subscription_buffer",
            "max_buffer_bytes",
        ):
            value = getattr(self, name)
            if value < 1:
                raise InvalidArgument(f"{name} must be at least 1, not {value}")
        for name in ("tool_timeout_s", "handshake_timeout_s"):
            value = getattr(self, name)
            if not (value > 0 and not math.isnan(value)):
                raise InvalidArgument(f"{name} must be positive, not {value}")
