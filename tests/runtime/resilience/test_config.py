"""``[policy.<name>]`` tables: Dapr's knobs, durations as numbers or Go strings, refusals
that name the table."""

from __future__ import annotations

from typing import Any

import pytest

from loom.runtime.resilience import (
    CircuitBreaker,
    Policy,
    PolicyConfigError,
    RateLimit,
    Retry,
    load_policies,
)


def test_policies_from_toml_tables() -> None:
    configs = load_policies(
        {
            "api": {
                "timeout": "1m30s",
                "max_concurrency": 4,
                "retry": {"policy": "constant", "duration": "250ms", "max_retries": -1},
                "circuit_breaker": {"trip": "consecutiveFailures >= 5 || totalFailures > 9"},
                "rate_limit": {"rate": 2.5, "burst": 3},
            }
        }
    )
    api = configs["api"]
    assert api.timeout == 90
    assert api.retry == Retry(policy="constant", duration=0.25, max_retries=-1)
    assert api.rate_limit == RateLimit(rate=2.5, burst=3)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"timeout": "soon"}, "not a duration"),
        ({"retry": {"max_retries": -2}}, "max_retries"),
        ({"circuit_breaker": {"trip": "failures > 3"}}, "is not '<count> <op> <integer>'"),
        ({"rate_limit": {"rate": 0}}, "rate"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"retries": {}}, "unknown field"),
    ],
)
def test_bad_policy_tables_are_refused_by_name(table: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyConfigError, match=r"\[policy\.bad\]") as caught:
        load_policies({"bad": table})
    assert message in str(caught.value)


def test_a_policy_is_made_outside_an_event_loop() -> None:
    # At import time, say, for a tool registered later: its clock starts at its first call.
    policy = Policy.of(
        "module-level",
        timeout=1,
        circuit_breaker=CircuitBreaker(interval=10),
        rate_limit=RateLimit(rate=1),
        max_concurrency=2,
    )
    assert policy.name == "module-level"
