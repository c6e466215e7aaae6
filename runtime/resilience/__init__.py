"""``loom.runtime.resilience``: the one resilience mechanism of Loom.

A :class:`Policy` puts a timeout, retries (only for idempotent calls, or calls carrying an
idempotency key), a circuit breaker, a token-bucket rate limit and a concurrency cap around a
call; the tool registry, the model providers and ``ctx.request`` all call through it.
``docs/guardrails.md`` says what each knob does and costs.
"""

from .._public import set_public_module as _set_public_module
from ._breaker import BreakerState as BreakerState
from ._breaker import BreakerStats as BreakerStats
from ._config import CircuitBreaker as CircuitBreaker
from ._config import PolicyConfig as PolicyConfig
from ._config import RateLimit as RateLimit
from ._config import Retry as Retry
from ._config import load_policies as load_policies
from ._errors import CircuitOpen as CircuitOpen
from ._errors import PolicyConfigError as PolicyConfigError
from ._errors import PolicyError as PolicyError
from ._key import current_idempotency_key as current_idempotency_key
from ._key import idempotency_key as idempotency_key
from ._policy import Outcomes as Outcomes
from ._policy import Policy as Policy
from ._policy import PolicyStats as PolicyStats
from ._set import Policies as Policies
from ._set import PoliciesStats as PoliciesStats
from ._set import PolicyRules as PolicyRules
from ._trip import BreakerCounts as BreakerCounts

__all__ = [
    "BreakerCounts",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "CircuitOpen",
    "Outcomes",
    "Policies",
    "PoliciesStats",
    "Policy",
    "PolicyConfig",
    "PolicyConfigError",
    "PolicyError",
    "PolicyRules",
    "PolicyStats",
    "RateLimit",
    "Retry",
    "current_idempotency_key",
    "idempotency_key",
    "load_policies",
]

_set_public_module(globals())
