"""The circuit breaker's state machine: closed, open, half-open (gobreaker's, as Dapr uses it)."""

from __future__ import annotations

import enum

import anyio
import msgspec

from ._config import CircuitBreaker
from ._errors import CircuitOpen
from ._trip import BreakerCounts, parse_trip

__all__ = ["Breaker", "BreakerState", "BreakerStats"]


class BreakerState(enum.Enum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    """Calls go through; failures are counted against ``trip``."""
    OPEN = "open"
    """Every call is refused with ``CircuitOpen`` until ``timeout`` has passed."""
    HALF_OPEN = "half_open"
    """Up to ``max_requests`` probe calls go through; their outcome closes or reopens it."""


class BreakerStats(msgspec.Struct, frozen=True, kw_only=True):
    """A breaker's state and counters.

    Attributes:
        state: where it stands now.
        counts: what it counted since it last closed or cleared.
        opened: times it opened (tripped, or a half-open probe failed).
        rejected: calls it refused.
        retry_in: seconds until an open breaker half-opens (0 otherwise).
    """

    state: BreakerState
    counts: BreakerCounts
    opened: int
    rejected: int
    retry_in: float


class Breaker:
    """One breaker's live state. Synchronous: the policy calls :meth:`before` as an attempt
    starts and :meth:`after` once it ended, on the event loop (no locks needed).

    An attempt's outcome counts only in the generation it started in: one that started before
    the breaker changed state (a slow call still running when it opened) is ignored.
    """

    __slots__ = (
        "_config",
        "_counts",
        "_expiry",
        "_generation",
        "_name",
        "_opened",
        "_rejected",
        "_state",
        "_trip",
    )

    def __init__(self, name: str, config: CircuitBreaker) -> None:
        self._name = name
        self._config = config
        self._trip = parse_trip(config.trip)
        self._state = BreakerState.CLOSED
        self._counts = BreakerCounts()
        self._generation = 0
        self._opened = 0
        self._rejected = 0
        self._expiry = self._closed_expiry(anyio.current_time())

    def _closed_expiry(self, now: float) -> float:
        return now + self._config.interval if self._config.interval > 0 else float("inf")

    def _set(self, state: BreakerState, now: float) -> None:
        self._state = state
        self._generation += 1
        self._counts = BreakerCounts()
        if state is BreakerState.CLOSED:
            self._expiry = self._closed_expiry(now)
        elif state is BreakerState.OPEN:
            self._opened += 1
            self._expiry = now + self._config.timeout
        else:
            self._expiry = float("inf")

    def _current(self, now: float) -> BreakerState:
        if now >= self._expiry:
            if self._state is BreakerState.CLOSED:
                self._generation += 1
                self._counts = BreakerCounts()
                self._expiry = self._closed_expiry(now)
            elif self._state is BreakerState.OPEN:
                self._set(BreakerState.HALF_OPEN, now)
        return self._state

    @property
    def state(self) -> BreakerState:
        return self._current(anyio.current_time())

    def before(self) -> int:
        """Let an attempt through and return its generation, or refuse it.

        Raises:
            CircuitOpen: open, or half-open with ``max_requests`` probes already out.
        """
        now = anyio.current_time()
        state = self._current(now)
        if state is BreakerState.OPEN or (
            state is BreakerState.HALF_OPEN and self._counts.requests >= self._config.max_requests
        ):
            self._rejected += 1
            raise CircuitOpen(
                self._name, max(self._expiry - now, 0.0) if state is BreakerState.OPEN else 0.0
            )
        self._counts = msgspec.structs.replace(self._counts, requests=self._counts.requests + 1)
        return self._generation

    def after(self, generation: int, success: bool) -> None:
        """Count the outcome of an attempt let through in ``generation``."""
        now = anyio.current_time()
        state = self._current(now)
        if generation != self._generation:
            return
        c = self._counts
        if success:
            self._counts = msgspec.structs.replace(
                c,
                total_successes=c.total_successes + 1,
                consecutive_successes=c.consecutive_successes + 1,
                consecutive_failures=0,
            )
            if (
                state is BreakerState.HALF_OPEN
                and self._counts.consecutive_successes >= self._config.max_requests
            ):
                self._set(BreakerState.CLOSED, now)
            return
        self._counts = msgspec.structs.replace(
            c,
            total_failures=c.total_failures + 1,
            consecutive_failures=c.consecutive_failures + 1,
            consecutive_successes=0,
        )
        if state is BreakerState.HALF_OPEN or self._trip(self._counts):
            self._set(BreakerState.OPEN, now)

    def forget(self, generation: int) -> None:
        """An attempt let through ended without an outcome (cancelled): free its probe slot."""
        if generation == self._generation and self._counts.requests > 0:
            self._counts = msgspec.structs.replace(self._counts, requests=self._counts.requests - 1)

    def statistics(self) -> BreakerStats:
        now = anyio.current_time()
        state = self._current(now)
        return BreakerStats(
            state=state,
            counts=self._counts,
            opened=self._opened,
            rejected=self._rejected,
            retry_in=max(self._expiry - now, 0.0) if state is BreakerState.OPEN else 0.0,
        )
