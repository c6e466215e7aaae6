"""A circuit breaker's ``trip`` condition: Dapr's CEL subset over the breaker's counts."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

import msgspec

from ._errors import PolicyConfigError

__all__ = ["BreakerCounts", "Trip", "parse_trip"]


class BreakerCounts(msgspec.Struct, frozen=True, kw_only=True):
    """What a closed breaker has counted since it closed or last cleared (gobreaker's Counts).

    Attributes:
        requests: calls let through.
        total_successes: those that succeeded.
        total_failures: those that failed.
        consecutive_successes: successes since the last failure.
        consecutive_failures: failures since the last success.
    """

    requests: int = 0
    total_successes: int = 0
    total_failures: int = 0
    consecutive_successes: int = 0
    consecutive_failures: int = 0


Trip = Callable[[BreakerCounts], bool]

_NAMES = {
    "requests": "requests",
    "totalSuccesses": "total_successes",
    "totalFailures": "total_failures",
    "consecutiveSuccesses": "consecutive_successes",
    "consecutiveFailures": "consecutive_failures",
}
_NAMES |= {v: v for v in list(_NAMES.values())}
_OPS = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_TERM = re.compile(r"\s*([A-Za-z_]+)\s*(>=|<=|==|!=|>|<)\s*(\d+)\s*")


def _term(text: str, source: str) -> Trip:
    match = _TERM.fullmatch(text)
    if match is None or match[1] not in _NAMES:
        raise PolicyConfigError(
            f"trip {source!r}: {text.strip()!r} is not '<count> <op> <integer>' "
            f"(counts: {', '.join(list(_NAMES)[:5])})"
        )
    field, op, limit = _NAMES[match[1]], _OPS[match[2]], int(match[3])
    return lambda counts: bool(op(getattr(counts, field), limit))


def parse_trip(source: str) -> Trip:
    """The condition ``source`` says: comparisons joined by ``||`` and ``&&`` (which binds
    tighter), without parentheses.

    Raises:
        PolicyConfigError: anything else.
    """
    alternatives = []
    for alternative in source.split("||"):
        terms = [_term(t, source) for t in alternative.split("&&")]
        alternatives.append(terms)

    def trip(counts: BreakerCounts) -> bool:
        return any(all(t(counts) for t in terms) for terms in alternatives)

    return trip
