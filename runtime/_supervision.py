"""What happens when an agent's handler raises: the supervision policy.

Defaults (documented in docs/agents.md): ``restart``, at most 5 restarts in 60 s, backoff from
0.1 s doubling to 10 s with jitter, and an event that fails 3 times is poison: it goes to the
dead-letter topic with its error and is never handled again.
"""

from __future__ import annotations

import enum
import random

import msgspec

from ._errors import InvalidArgument

__all__ = ["Strategy", "SupervisionPolicy"]


class Strategy(enum.Enum):
    """How an agent reacts to a handler that raised."""

    RESUME = "resume"
    """Keep the instance and its state; the failed event goes to the dead-letter topic."""
    RESTART = "restart"
    """Stop the instance, back off, start a fresh one; the event is retried there until poison."""
    STOP = "stop"
    """Stop the agent; the failed event goes to the dead-letter topic."""


class SupervisionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """An agent's supervision policy.

    Attributes:
        strategy: resume, restart or stop.
        max_restarts: restarts allowed within ``window_s``; one more and the agent is ``failed``.
        window_s: the sliding window over which restarts are counted.
        backoff_initial_s: the first restart's delay.
        backoff_max_s: the cap of the delay, which doubles per consecutive restart.
        jitter: fraction of the delay drawn at random (0 to 1), so a crowd of agents that
            failed together does not restart in lockstep.
        poison_after: how many times one event may fail before it is dead-lettered instead of
            retried (``restart`` retries it in the fresh instance; the other strategies never
            retry, so for them every failed event is dead-lettered at once).
    """

    strategy: Strategy = Strategy.RESTART
    max_restarts: int = 5
    window_s: float = 60.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 10.0
    jitter: float = 0.5
    poison_after: int = 3

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise InvalidArgument(f"max_restarts must be >= 0, not {self.max_restarts}")
        if self.window_s <= 0:
            raise InvalidArgument(f"window_s must be > 0, not {self.window_s}")
        if not 0 <= self.backoff_initial_s <= self.backoff_max_s:
            raise InvalidArgument("need 0 <= backoff_initial_s <= backoff_max_s")
        if not 0 <= self.jitter <= 1:
            raise InvalidArgument(f"jitter must be within 0..1, not {self.jitter}")
        if self.poison_after < 1:
            raise InvalidArgument(f"poison_after must be >= 1, not {self.poison_after}")

    def backoff(self, consecutive: int) -> float:
        """The delay before restart number ``consecutive`` (1-based) in a row."""
        base = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** max(0, consecutive - 1))
        return base * (1 - self.jitter * random.random())
