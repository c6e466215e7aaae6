"""The circuit breaker's state machine: closed, open, half-open (gobreaker's, as Dapr uses it)."""

from __future__ import annotations

import enum
from typing import Final

import anyio
import msgspec

from ._config import CircuitBreaker
from ._errors import CircuitOpen
from ._trip import BreakerCounts, parse_trip

__all__ = ["Breaker", "BreakerState", "BreakerStats"]

_NEVER: Final = float("inf")


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
        counts: what it counted since it last closed, cleared or half-opened.
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
    the breaker changed state (a slow call still running when it opened) is ignored. The
    clock is read only when a deadline is pending (open, or a closed interval), so a closed
    breaker costs a few attribute updates a call.
    """

    __slots__ = (
        "_config",
        "_expiry",
        "_generation",
        "_name",
        "_state",
        "_trip",
        "consecutive_failures",
        "consecutive_successes",
        "opened",
        "rejected",
        "requests",
        "total_failures",
        "total_successes",
    )

    def __init__(self, name: str, config: CircuitBreaker) -> None:
        self._name = name
        self._config = config
        self._trip = parse_trip(config.trip)
        self._state = BreakerState.CLOSED
        self._generation = 0
        self.opened = self.rejected = 0
        self._clear()
        # Made outside an event loop too (a policy at import time): a closed breaker with an
        # interval starts its first one at its first use (-inf has expired already).
        self._expiry = float("-inf") if config.interval > 0 else _NEVER

    def _clear(self) -> None:
        self.requests = self.total_successes = self.total_failures = 0
        self.consecutive_successes = self.consecutive_failures = 0

    def counts(self) -> BreakerCounts:
        return BreakerCounts(
            requests=self.requests,
            total_successes=self.total_successes,
            total_failures=self.total_failures,
            consecutive_successes=self.consecutive_successes,
            consecutive_failures=self.consecutive_failures,
        )

    def _set(self, state: BreakerState, now: float) -> None:
        self._state = state
        self._generation += 1
        self._clear()
        if state is BreakerState.CLOSED:
            interval = self._config.interval
            self._expiry = now + interval if interval > 0 else _NEVER
        elif state is BreakerState.OPEN:
            self.opened += 1
            self._expiry = now + self._config.timeout
        else:
            self._expiry = _NEVER

    def _current(self) -> BreakerState:
        if self._expiry != _NEVER:
            now = anyio.current_time()
            if now >= self._expiry:
                if self._state is BreakerState.CLOSED:
                    self._set(BreakerState.CLOSED, now)  # the interval ended: counts cleared
                elif self._state is BreakerState.OPEN:
                    self._set(BreakerState.HALF_OPEN, now)
        return self._state

    @property
    def state(self) -> BreakerState:
        return self._current()

    def check(self) -> None:
        """Refuse a call at once while open (before it waits for a concurrency slot).

        Raises:
            CircuitOpen: open.
        """
        if self._current() is BreakerState.OPEN:
            self.rejected += 1
            raise CircuitOpen(self._name, self._retry_in(BreakerState.OPEN))

    def before(self) -> int:
        """Let an attempt through and return its generation, or refuse it.

        Raises:
            CircuitOpen: open, or half-open with ``max_requests`` probes already out.
        """
        state = self._current()
        if state is not BreakerState.CLOSED and (
            state is BreakerState.OPEN or self.requests >= self._config.max_requests
        ):
            self.rejected += 1
            raise CircuitOpen(self._name, self._retry_in(state))
        self.requests += 1
        return self._generation

    def after(self, generation: int, success: bool) -> None:
        """Count the outcome of an attempt let through in ``generation``."""
        state = self._current()
        if generation != self._generation:
            return
        if success:
            self.total_successes += 1
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            if (
                state is BreakerState.HALF_OPEN
                and self.consecutive_successes >= self._config.max_requests
            ):
                self._set(BreakerState.CLOSED, anyio.current_time())
            return
        self.total_failures += 1
        self.consecutive_failures += 1
        self.consecutive_successes = 0
        if state is BreakerState.HALF_OPEN or self._trip(self.counts()):
            self._set(BreakerState.OPEN, anyio.current_time())

    def forget(self, generation: int) -> None:
        """An attempt let through ended without an outcome (cancelled): free its probe slot."""
        if generation == self._generation and self.requests > 0:
            self.requests -= 1

    def _retry_in(self, state: BreakerState) -> float:
        if state is not BreakerState.OPEN:
            return 0.0
        return max(self._expiry - anyio.current_time(), 0.0)

    def statistics(self) -> BreakerStats:
        state = self._current()
        return BreakerStats(
            state=state,
            counts=self.counts(),
            opened=self.opened,
            rejected=self.rejected,
            retry_in=self._retry_in(state),
        )
