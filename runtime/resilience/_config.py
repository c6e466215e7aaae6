"""What a policy is made of, as ``loom.toml``'s ``[policy.<name>]`` tables and code write it.

The knobs and their names follow Dapr's resiliency spec (timeouts; retries with ``policy``
``constant`` or ``exponential``, ``duration``, ``max_interval``, ``max_retries``; circuit
breakers with ``max_requests``, ``interval``, ``timeout``, ``trip``), in snake case, plus two
that Dapr leaves to the sidecar's caller: a token-bucket rate limit and a concurrency cap.
Durations are seconds, or Dapr's strings (``"500ms"``, ``"5s"``, ``"1m30s"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from ._errors import PolicyConfigError
from ._trip import parse_trip

__all__ = ["CircuitBreaker", "PolicyConfig", "RateLimit", "Retry", "load_policies"]


class Retry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How failed attempts are made again (only for idempotent calls or calls with a key).

    Attributes:
        policy: ``exponential``: the wait before retry ``n`` (from 0) is uniform in
            ``[0, min(max_interval, duration * 2**n)]`` (full jitter); ``constant``: always
            ``duration``.
        duration: the constant wait, or the first exponential cap.
        max_interval: the cap of one exponential wait.
        max_retries: attempts after the first; ``-1``: until the call's deadline.
        retry_after_max: the cap on a server's ``Retry-After`` (which replaces the wait).
    """

    policy: Literal["constant", "exponential"] = "exponential"
    duration: float = 0.5
    max_interval: float = 8.0
    max_retries: int = 2
    retry_after_max: float = 30.0

    def __post_init__(self) -> None:
        if self.duration < 0 or self.max_interval < 0 or self.retry_after_max < 0:
            raise PolicyConfigError("retry durations must not be negative")
        if self.max_retries < -1:
            raise PolicyConfigError("retry max_retries must be -1 (no limit) or more")


class CircuitBreaker(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A breaker that stops calling a target that keeps failing.

    Attributes:
        trip: when a closed breaker opens, over its counts (``requests``, ``totalSuccesses``,
            ``totalFailures``, ``consecutiveSuccesses``, ``consecutiveFailures``):
            comparisons joined by ``&&`` / ``||``, e.g. ``"consecutiveFailures >= 5"``.
        timeout: seconds an open breaker refuses every call before it half-opens.
        max_requests: calls let through while half-open; that many successes close it, one
            failure opens it again.
        interval: seconds after which a closed breaker clears its counts (0: never).
    """

    trip: str = "consecutiveFailures >= 5"
    timeout: float = 60.0
    max_requests: int = 1
    interval: float = 0.0

    def __post_init__(self) -> None:
        parse_trip(self.trip)  # raises PolicyConfigError
        if self.timeout < 0 or self.interval < 0:
            raise PolicyConfigError("circuit_breaker timeout and interval must not be negative")
        if self.max_requests < 1:
            raise PolicyConfigError("circuit_breaker max_requests must be at least 1")


class RateLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A token bucket: ``rate`` tokens a second, holding at most ``burst``; each attempt takes
    one, waiting (first come, first served, within the call's deadline) when none is left.
    """

    rate: float
    burst: int = 1

    def __post_init__(self) -> None:
        if not self.rate > 0 or math.isinf(self.rate):
            raise PolicyConfigError("rate_limit rate must be a positive number of calls a second")
        if self.burst < 1:
            raise PolicyConfigError("rate_limit burst must be at least 1")


class PolicyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[policy.<name>]`` table; every part is optional, and an empty policy does nothing.

    Attributes:
        timeout: seconds one attempt may take (Dapr's timeout); the call's own deadline
            still bounds all attempts and waits together.
        retry: how failed attempts are retried.
        circuit_breaker: when to stop calling.
        rate_limit: how often attempts may start.
        max_concurrency: calls in flight at once (held from the first attempt to the last);
            more wait their turn, first come first served.
    """

    timeout: float | None = None
    retry: Retry | None = None
    circuit_breaker: CircuitBreaker | None = None
    rate_limit: RateLimit | None = None
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout > 0:
            raise PolicyConfigError("timeout must be positive seconds")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise PolicyConfigError("max_concurrency must be at least 1")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_FIELDS = ("timeout", "duration", "max_interval", "retry_after_max", "interval")


def _seconds(value: object, where: str) -> object:
    # Dapr writes durations as Go strings; a number is seconds.
    if not isinstance(value, str):
        return value
    text = value.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise PolicyConfigError(f"{where}: {value!r} is not a duration (e.g. 5, '500ms', '1m30s')")
    return sum(float(n) * _UNIT[u] for n, u in parts)


def _durations(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out[key] = _durations(value, f"{where}.{key}")
        elif key in _DURATION_FIELDS:
            out[key] = _seconds(value, f"{where}.{key}")
        else:
            out[key] = value
    return out


def load_policies(table: Mapping[str, Any]) -> dict[str, PolicyConfig]:
    """Decode the ``[policy]`` table of a parsed ``loom.toml``: name -> :class:`PolicyConfig`.

    Raises:
        PolicyConfigError: a table is malformed; the message names it.
    """
    policies: dict[str, PolicyConfig] = {}
    for name, body in table.items():
        where = f"[policy.{name}]"
        if not isinstance(body, Mapping):
            raise PolicyConfigError(f"{where} must be a table, got {type(body).__name__}")
        try:
            policies[name] = msgspec.convert(_durations(body, where), PolicyConfig)
        except msgspec.ValidationError as exc:
            raise PolicyConfigError(f"{where}: {exc}") from None
        except PolicyConfigError as exc:
            raise PolicyConfigError(f"{where}: {exc}") from None
    return policies
