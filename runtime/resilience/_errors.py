"""The errors of resilience policies: a refused call and a malformed policy."""

from __future__ import annotations

from .._errors import ConfigError, LoomError

__all__ = ["CircuitOpen", "PolicyConfigError", "PolicyError"]


class PolicyError(LoomError):
    """A resilience policy refused a call before it reached its target."""


class CircuitOpen(PolicyError):
    """The policy's circuit breaker is open (or half-open with its probes taken): the call was
    not made. Each attachment turns it into its own error (a tool's ``ToolUnavailable``, a
    provider's ``ProviderUnavailable``, a request's ``NoResponders``) with this as the cause.

    Attributes:
        policy: the policy's name.
        retry_in: seconds until the breaker lets a probe through (0 when half-open).
    """

    def __init__(self, policy: str, retry_in: float) -> None:
        self.policy = policy
        self.retry_in = retry_in
        super().__init__(f"circuit breaker of policy {policy!r} is open; retry in {retry_in:.3g}s")


class PolicyConfigError(ConfigError):
    """A ``[policy.<name>]`` table, or a reference to a policy, is invalid."""
