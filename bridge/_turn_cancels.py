"""Cancels of turns not yet confirmed, kept to be sent again (``STREAM_FEATURE_TURN_CANCEL``).

A ``cancel_turn`` frame the agent never answered with ``TurnCancelled`` may have been lost
with its stream (dropped between the frame and its arrival), and a cancel for an agent whose
stream is not open now (it is reconnecting) has nowhere to go: either way its turn would run
on, unseen, while the caller believes it stopped. The server keeps such a cancel, by agent and
thread, and sends it again on that agent's next stream; the agent's answer clears it. A
resent cancel of a turn that already ended cancels nothing (the agent answers 0).

Bounded in count (the oldest is dropped) and in time (a turn that outlived the hold is let
be): what stays here must not grow with a misbehaving or vanished agent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio

log = logging.getLogger("loom.bridge")

#: How long an unconfirmed cancel is kept for the agent's next stream (seconds).
HOLD_S = 600.0
#: How many unconfirmed cancels the server keeps (all agents); the oldest goes first.
MAX_HELD = 1024


@dataclass(slots=True)
class _Held:
    reason: str
    until: float  # anyio.current_time() after which it is dropped


class HeldCancels:
    """The server's unconfirmed cancels of turns, by ``(agent_id, thread_id)``."""

    def __init__(self, *, hold_s: float = HOLD_S, max_held: int = MAX_HELD) -> None:
        self.hold_s = hold_s
        self.max_held = max_held
        self._held: dict[tuple[str, str], _Held] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, agent_id: str, thread_id: str, reason: str) -> None:
        """Keep a cancel until the agent confirms it (sent now, or not sendable now)."""
        key = (agent_id, thread_id)
        self._held.pop(key, None)  # a newer cancel of the same thread: newest last
        self._held[key] = _Held(reason, anyio.current_time() + self.hold_s)
        while len(self._held) > self.max_held:
            (old_agent, old_thread), _ = next(iter(self._held.items()))
            del self._held[(old_agent, old_thread)]
            log.warning(
                "agent %s: unconfirmed cancel of thread %s dropped (%d held at most)",
                old_agent,
                old_thread,
                self.max_held,
            )

    def confirm(self, agent_id: str, thread_id: str) -> None:
        """The agent answered the cancel of ``thread_id`` (``TurnCancelled``): forget it."""
        self._held.pop((agent_id, thread_id), None)

    def due(self, agent_id: str) -> list[tuple[str, str]]:
        """``(thread_id, reason)`` of the cancels to send again to ``agent_id`` (kept until
        confirmed); those past their hold are dropped."""
        now = anyio.current_time()
        out: list[tuple[str, str]] = []
        for key, held in list(self._held.items()):
            if held.until <= now:
                del self._held[key]
            elif key[0] == agent_id:
                out.append((key[1], held.reason))
        return out

    def drop(self, agent_id: str) -> int:
        """Forget every cancel held for ``agent_id`` (its new stream takes none); how many."""
        keys = [key for key in self._held if key[0] == agent_id]
        for key in keys:
            del self._held[key]
        return len(keys)
