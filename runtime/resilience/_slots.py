"""A concurrency cap that costs nothing while a slot is free."""

from __future__ import annotations

from collections import deque

import anyio

__all__ = ["Slots"]


class Slots:
    """``total`` slots, handed out first come, first served.

    Unlike ``anyio.CapacityLimiter`` it does not yield to the event loop when a slot is free
    (the call it guards is about to await anyway): a policy's cap then costs a counter. A
    released slot goes straight to the first waiter, so a late arrival never overtakes it.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, total: int) -> None:
        self._free = total
        self._waiters: deque[anyio.Event] = deque()

    async def acquire(self) -> None:
        """Take a slot, waiting for one."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        granted = anyio.Event()
        self._waiters.append(granted)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():
                self.release()  # handed a slot as we were cancelled: pass it on
            else:
                self._waiters.remove(granted)
            raise

    def release(self) -> None:
        """Give a slot back: to the first waiter, else to the pool."""
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self._free += 1
