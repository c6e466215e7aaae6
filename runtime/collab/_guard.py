"""A request under its resilience policy (``[requests.policy]``, by topic).

A request is retried only when it may be answered twice: its metadata carries an
``idempotency-key`` (which the responder receives with the request, the same on every attempt)
or says ``idempotent: "true"``. Every attempt publishes the same event, with the same
correlation id, so a late reply to an earlier attempt answers the call as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import anyio

from .._event import Event
from ..resilience import CircuitOpen, Policy
from ._errors import NoResponders, RequestTimeout

__all__ = ["IDEMPOTENCY_KEY", "guarded_request"]

IDEMPOTENCY_KEY: Final = "idempotency-key"
"""The metadata key of a request's idempotency key."""


class _RequestOutcomes:
    """No reply in time and nobody subscribed are the target's failures, worth another try;
    an open breaker is raised as it is (``CircuitOpen``: the request was not published)."""

    __slots__ = ("_correlation_id", "_topic")

    def __init__(self, topic: str, correlation_id: str) -> None:
        self._topic = topic
        self._correlation_id = correlation_id

    def failure(self, exc: Exception) -> bool:
        return isinstance(exc, RequestTimeout | NoResponders)

    def transient(self, exc: Exception) -> bool:
        return isinstance(exc, RequestTimeout | NoResponders)

    def retry_after(self, exc: Exception) -> float | None:
        return None

    def timed_out(self, seconds: float) -> Exception:
        return RequestTimeout(self._topic, self._correlation_id, seconds)

    def refused(self, exc: CircuitOpen) -> Exception:
        return exc


def idempotent(event: Event) -> bool:
    metadata = event.metadata
    return IDEMPOTENCY_KEY in metadata or metadata.get("idempotent") == "true"


async def guarded_request(
    policy: Policy,
    send: Callable[[str, Event, float], Awaitable[Event]],
    topic: str,
    event: Event,
    timeout: float,
) -> Event:
    """``send(topic, event, timeout)`` under ``policy``, all attempts within ``timeout``."""
    correlation_id = event.envelope.correlation_id
    deadline = anyio.current_time() + timeout

    async def attempt() -> Event:
        return await send(topic, event, max(deadline - anyio.current_time(), 1e-6))

    with anyio.move_on_at(deadline):
        return await policy.call(
            attempt, idempotent=idempotent(event), outcomes=_RequestOutcomes(topic, correlation_id)
        )
    raise RequestTimeout(topic, correlation_id, timeout)
