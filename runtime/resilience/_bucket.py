"""A token bucket that makes callers wait their turn, in the order they came."""

from __future__ import annotations

import time

import anyio

from ._config import RateLimit

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` banked.

    A caller that finds no token reserves the next one (the balance goes below zero) and
    sleeps until it is due, so callers are served in arrival order and the spacing holds
    however many wait; a caller cancelled while waiting gives its reservation back.
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens", "waits")

    def __init__(self, config: RateLimit) -> None:
        self._rate = config.rate
        self._burst = float(config.burst)
        self._tokens = self._burst
        # Set at first use, so that a bucket can be made outside an event loop.
        self._last: float | None = None
        self.waits = 0

    def _refill(self, now: float) -> None:
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now

    async def take(self) -> None:
        """Take one token, waiting until one is due."""
        # The process's monotonic clock: only intervals matter here, and it costs a third of
        # the event loop's (anyio looks the backend up on every read).
        self._refill(time.monotonic())
        self._tokens -= 1.0
        if self._tokens >= 0.0:
            return
        self.waits += 1
        try:
            await anyio.sleep(-self._tokens / self._rate)
        except BaseException:
            self._tokens += 1.0
            raise

    @property
    def tokens(self) -> float:
        """Tokens banked now (negative: owed to waiting callers)."""
        self._refill(time.monotonic())
        return self._tokens
