"""A live policy: timeout, retry, circuit breaker, rate limit and concurrency cap around calls.

The order of the parts, outermost first, is Dapr's: the concurrency slot is taken once for
the whole call; then each attempt passes the circuit breaker, takes a rate-limit token, and
runs under the timeout; a failed attempt of an idempotent call is retried after its backoff.
What a call gives up on leaves nothing behind here: a cancelled attempt frees its slot and
breaker probe; the call's own deadline (the caller's cancel scope) bounds everything, and a
retry whose wait would end past it is not made (the last error is raised instead).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

import anyio
import msgspec

from ._breaker import Breaker, BreakerStats
from ._bucket import TokenBucket
from ._config import CircuitBreaker, PolicyConfig, RateLimit, Retry
from ._errors import CircuitOpen
from ._slots import Slots

__all__ = ["Outcomes", "Policy", "PolicyStats"]

_log = logging.getLogger("loom.runtime.resilience")

_T = TypeVar("_T")


class Outcomes(Protocol):
    """How one kind of target's errors read to a policy (tools, model providers, requests)."""

    def failure(self, exc: Exception) -> bool:
        """Whether ``exc`` counts against the target (the breaker); a caller's mistake (bad
        arguments, a refused request) does not."""
        ...

    def transient(self, exc: Exception) -> bool:
        """Whether another attempt may succeed where this one raised ``exc``."""
        ...

    def retry_after(self, exc: Exception) -> float | None:
        """The wait the target asked for (``Retry-After``), or ``None``."""
        ...

    def timed_out(self, seconds: float) -> Exception:
        """The error of an attempt that ran out of the policy's ``timeout``."""
        ...

    def refused(self, exc: CircuitOpen) -> Exception:
        """The error the caller sees for a call the open breaker refused."""
        ...


class PolicyStats(msgspec.Struct, frozen=True, kw_only=True):
    """One policy's counters since it was made.

    Attributes:
        name: the policy's name (``<policy>@<target>`` for one made for an attachment).
        calls: calls started through it.
        succeeded: calls that returned.
        failed: calls that raised (after their retries), refusals included.
        retries: attempts made after a first one failed.
        timeouts: attempts that ran out of the policy's ``timeout``.
        rejected: calls the open breaker refused.
        rate_limited: attempts that waited for a rate-limit token.
        waiting: calls waiting for a concurrency slot now.
        in_flight: calls holding a slot now (or running, without a cap).
        breaker: the circuit breaker's state, when the policy has one.
    """

    name: str
    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    timeouts: int = 0
    rejected: int = 0
    rate_limited: int = 0
    waiting: int = 0
    in_flight: int = 0
    breaker: BreakerStats | None = None


class Policy:
    """The one resilience mechanism of Loom, applied to tools, model providers and requests.

    Its state (the breaker, the bucket, the slots, the counters) belongs to this object: every
    target it is attached to shares it. Configuration attaches one per target
    (``<policy>@<target>``), so each MCP server pattern or provider has its own breaker.

    Args:
        name: how statistics, metrics and errors name it.
        config: its parts (an empty ``PolicyConfig`` does nothing, at a cost of well under a
            microsecond a call: ``benchmarks/guardrails.py``).
        seed: seeds the jitter (tests).
    """

    def __init__(
        self, name: str, config: PolicyConfig | None = None, *, seed: int | None = None
    ) -> None:
        config = config or PolicyConfig()
        self.name = name
        self.config = config
        self._timeout = config.timeout
        self._retry: Retry | None = config.retry
        self._breaker = (
            Breaker(name, config.circuit_breaker) if config.circuit_breaker is not None else None
        )
        self._bucket = TokenBucket(config.rate_limit) if config.rate_limit is not None else None
        self._slots = Slots(config.max_concurrency) if config.max_concurrency is not None else None
        self._random = random.Random(seed)
        # Nothing to do but count: the fast path of call().
        self._bare = (
            self._timeout is None
            and self._breaker is None
            and self._bucket is None
            and self._slots is None
            and self._retry is None
        )
        # One attempt at most, run as it is: only retries (or not even those) to apply.
        self._plain = self._timeout is None and self._breaker is None and self._bucket is None
        self._calls = self._succeeded = self._failed = self._retries = 0
        self._timeouts = self._rejected = self._waiting = self._in_flight = 0

    @classmethod
    def of(
        cls,
        name: str,
        *,
        timeout: float | None = None,
        retry: Retry | None = None,
        circuit_breaker: CircuitBreaker | None = None,
        rate_limit: RateLimit | None = None,
        max_concurrency: int | None = None,
        seed: int | None = None,
    ) -> Policy:
        """A policy from its parts, as code writes it: ``Policy.of("gh", timeout=5)``."""
        config = PolicyConfig(
            timeout=timeout,
            retry=retry,
            circuit_breaker=circuit_breaker,
            rate_limit=rate_limit,
            max_concurrency=max_concurrency,
        )
        return cls(name, config, seed=seed)

    def statistics(self) -> PolicyStats:
        """A snapshot of this policy's counters and its breaker's state."""
        return PolicyStats(
            name=self.name,
            calls=self._calls,
            succeeded=self._succeeded,
            failed=self._failed,
            retries=self._retries,
            timeouts=self._timeouts,
            rejected=self._breaker.rejected if self._breaker is not None else 0,
            rate_limited=self._bucket.waits if self._bucket is not None else 0,
            waiting=self._waiting,
            in_flight=self._in_flight,
            breaker=self._breaker.statistics() if self._breaker is not None else None,
        )

    def __repr__(self) -> str:
        return f"Policy({self.name!r}, {self.config!r})"

    async def call(
        self, attempt: Callable[[], Awaitable[_T]], *, idempotent: bool, outcomes: Outcomes
    ) -> _T:
        """Run ``attempt`` under this policy and return what it returned.

        Args:
            attempt: makes one attempt; called again for each retry.
            idempotent: whether the call may be made more than once (an idempotent target,
                or one given an idempotency key it receives); only then is it retried.
            outcomes: how the target's errors read.

        Raises:
            Whatever the last attempt raised; ``outcomes.timed_out(...)`` for an attempt out
            of time; ``outcomes.refused(...)`` when the breaker refused it.
        """
        await self._enter(outcomes)
        try:
            if self._bare:
                result = await attempt()
            else:
                result = await self._attempts(attempt, idempotent, outcomes)
        except BaseException:
            self._failed += 1
            raise
        finally:
            self._leave()
        self._succeeded += 1
        return result

    @asynccontextmanager
    async def opened(
        self, attempt: Callable[[], Awaitable[_T]], *, idempotent: bool, outcomes: Outcomes
    ) -> AsyncIterator[_T]:
        """Like :meth:`call`, for a call that stays open after its attempt returned (a stream):
        the concurrency slot is held until the block exits."""
        await self._enter(outcomes)
        try:
            yield await self._attempts(attempt, idempotent, outcomes)
        except BaseException:
            self._failed += 1
            raise
        finally:
            self._leave()
        self._succeeded += 1

    async def _enter(self, outcomes: Outcomes) -> None:
        """Count a call and take its concurrency slot (an open breaker refuses first)."""
        self._calls += 1
        slots = self._slots
        if slots is not None:
            self._refuse_if_open(outcomes)
            self._waiting += 1
            try:
                await slots.acquire()
            finally:
                self._waiting -= 1
        self._in_flight += 1

    def _leave(self) -> None:
        """Give back what :meth:`_enter` took."""
        self._in_flight -= 1
        if self._slots is not None:
            self._slots.release()

    def _refuse_if_open(self, outcomes: Outcomes) -> None:
        # An open breaker refuses before the call queues for a slot, not after the wait.
        if self._breaker is not None:
            try:
                self._breaker.check()
            except CircuitOpen as exc:
                self._failed += 1
                raise outcomes.refused(exc) from exc

    async def _attempts(
        self, attempt: Callable[[], Awaitable[_T]], idempotent: bool, outcomes: Outcomes
    ) -> _T:
        retry = self._retry
        made = 0
        while True:
            try:
                if self._plain:
                    return await attempt()
                return await self._once(attempt, outcomes)
            except CircuitOpen as exc:
                raise outcomes.refused(exc) from exc
            except Exception as exc:
                error = exc
            if (
                retry is None
                or not idempotent
                or not outcomes.transient(error)
                or (retry.max_retries != -1 and made >= retry.max_retries)
            ):
                raise error
            delay = self._backoff(retry, made, outcomes.retry_after(error))
            if anyio.current_time() + delay >= anyio.current_effective_deadline():
                raise error
            _log.debug(
                "policy %s: %s; retry %d in %.3fs", self.name, type(error).__name__, made + 1, delay
            )
            made += 1
            self._retries += 1
            await anyio.sleep(delay)

    async def _once(self, attempt: Callable[[], Awaitable[_T]], outcomes: Outcomes) -> _T:
        breaker = self._breaker
        generation = breaker.before() if breaker is not None else 0
        try:
            if self._bucket is not None:
                await self._bucket.take()
            if self._timeout is None:
                result = await attempt()
            else:
                result = await self._timed(attempt, self._timeout, outcomes)
        except Exception as exc:
            if breaker is not None:
                breaker.after(generation, not outcomes.failure(exc))
            raise
        except BaseException:
            # Cancelled from outside: no outcome to count, but the probe slot is free again.
            if breaker is not None:
                breaker.forget(generation)
            raise
        if breaker is not None:
            breaker.after(generation, True)
        return result

    async def _timed(
        self, attempt: Callable[[], Awaitable[_T]], timeout: float, outcomes: Outcomes
    ) -> _T:
        with anyio.CancelScope(deadline=anyio.current_time() + timeout) as scope:
            try:
                return await attempt()
            except Exception as exc:
                # A target that turns our cancellation into an error of its own still ran out
                # of time.
                if scope.cancel_called:
                    raise self._timed_out(outcomes) from exc
                raise
        raise self._timed_out(outcomes)

    def _timed_out(self, outcomes: Outcomes) -> Exception:
        self._timeouts += 1
        assert self._timeout is not None
        return outcomes.timed_out(self._timeout)

    def _backoff(self, retry: Retry, made: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), retry.retry_after_max)
        if retry.policy == "constant":
            return retry.duration
        cap = min(retry.max_interval, retry.duration * 2.0 ** min(made, 64))
        return self._random.uniform(0.0, cap) if math.isfinite(cap) else retry.max_interval
