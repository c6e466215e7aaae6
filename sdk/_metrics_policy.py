"""The resilience policies' instruments of ``loom serve``'s metrics (``docs/guardrails.md``).

Read from ``AgentRuntime.policies.statistics()`` in the metrics' snapshot, by policy name
(``<policy>@<target>``): calls, failures, retries, timeouts, refusals and rate-limit waits as
counters; slots held and awaited, and each breaker's state (1 for the state it is in, 0 for
the others) and trips, as gauges and counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from loom.runtime.resilience import BreakerState, PolicyStats

if TYPE_CHECKING:
    from opentelemetry.metrics import Observation

__all__ = ["policy_instruments"]

_Register = Callable[..., None]

_COUNTERS = (
    ("calls", "Calls made through a resilience policy"),
    ("failed", "Calls through a policy that failed, after their retries"),
    ("retries", "Attempts a policy made again after a failure"),
    ("timeouts", "Attempts that ran out of a policy's timeout"),
    ("rejected", "Calls a policy's open circuit breaker refused"),
    ("rate_limited", "Attempts that waited for a policy's rate-limit token"),
)
_GAUGES = (
    ("in_flight", "Calls holding a policy's concurrency slot"),
    ("waiting", "Calls waiting for a policy's concurrency slot"),
)


def policy_instruments(
    counter: _Register, gauge: _Register, policies: Callable[[], tuple[PolicyStats, ...]]
) -> None:
    """Register the instruments; ``policies`` returns the snapshot's statistics."""
    from opentelemetry.metrics import Observation

    def by_policy(field: str) -> Callable[[], Iterable[Observation]]:
        return lambda: [Observation(getattr(s, field), {"policy": s.name}) for s in policies()]

    for field, what in _COUNTERS:
        counter(f"loom.policy.{field}", by_policy(field), description=what)
    for field, what in _GAUGES:
        gauge(f"loom.policy.{field}", by_policy(field), description=what)

    def states() -> list[Observation]:
        return [
            Observation(int(s.breaker.state is state), {"policy": s.name, "state": state.value})
            for s in policies()
            if s.breaker is not None
            for state in BreakerState
        ]

    def opened() -> list[Observation]:
        return [
            Observation(s.breaker.opened, {"policy": s.name})
            for s in policies()
            if s.breaker is not None
        ]

    gauge(
        "loom.policy.breaker.state",
        states,
        description="A policy's circuit breaker: 1 for its state (closed, open, half_open)",
    )
    counter("loom.policy.breaker.opened", opened, description="Times a circuit breaker opened")
