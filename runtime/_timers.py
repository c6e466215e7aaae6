"""Timers an agent sets with ``ctx.schedule``: events delivered to its own mailbox later."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec
from anyio.abc import TaskGroup

from ._errors import InvalidArgument
from ._event import Event
from ._ids import new_id, now_ms

__all__ = ["Timer", "TimerSet"]


class Timer:
    """A scheduled delivery; ``cancel()`` stops it (idempotent)."""

    __slots__ = ("_scope", "fired")

    def __init__(self) -> None:
        self._scope = anyio.CancelScope()
        self.fired = 0
        """How many times it has delivered its event."""

    def cancel(self) -> None:
        self._scope.cancel()

    @property
    def cancelled(self) -> bool:
        return self._scope.cancel_called


class TimerSet:
    """The timers of one agent instance; :meth:`cancel_all` ends them with the instance."""

    __slots__ = ("_deliver", "_tg", "_timers")

    def __init__(self, tg: TaskGroup, deliver: Callable[[Event], Awaitable[object]]) -> None:
        self._tg = tg
        self._deliver = deliver
        self._timers: set[Timer] = set()

    def schedule(
        self, event: Event, *, delay: float | None, every: float | None, at: float | None
    ) -> Timer:
        if delay is not None and at is not None:
            raise InvalidArgument("give delay or at, not both")
        if every is not None and not (every > 0 and math.isfinite(every)):
            raise InvalidArgument(f"every must be a positive number of seconds, not {every!r}")
        if delay is not None and not (delay >= 0 and math.isfinite(delay)):
            raise InvalidArgument(f"delay must be >= 0 seconds, not {delay!r}")
        if delay is None and at is None and every is None:
            raise InvalidArgument("give delay, at or every")
        first = delay if delay is not None else (at - time.time() if at is not None else every)
        timer = Timer()
        self._timers.add(timer)
        self._tg.start_soon(self._run, timer, event, max(0.0, first or 0.0), every)
        return timer

    async def _run(self, timer: Timer, event: Event, first: float, every: float | None) -> None:
        try:
            with timer._scope:
                await anyio.sleep(first)
                while True:
                    # Every firing is an event of its own: a fresh id and timestamp.
                    await self._deliver(
                        msgspec.structs.replace(event, id=new_id(), timestamp_ms=now_ms())
                    )
                    timer.fired += 1
                    if every is None:
                        return
                    await anyio.sleep(every)
        finally:
            self._timers.discard(timer)

    def cancel_all(self) -> None:
        for timer in list(self._timers):
            timer.cancel()

    def __len__(self) -> int:
        return len(self._timers)
