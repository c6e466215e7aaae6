"""One-shot wake-ups for parked receivers and publishers.

On asyncio a waiter is a bare future: about a tenth of the memory of an ``anyio.Event`` (which
wraps an ``asyncio.Event`` with its own deque) and a fraction of its cost to make. That matters
because an idle agent is parked on one, and 100,000 idle agents must fit in well under a GiB.
Elsewhere (trio) it is an ``anyio.Event``. Both honour cancellation the anyio way: a waiter
cancelled after it was set still reports ``is_set()``, so the wake-up it carried can be passed on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio

__all__ = ["Waiter", "waiter_factory"]


class Waiter(Protocol):
    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self) -> Awaitable[Any]: ...


class _FutureWaiter(asyncio.Future[None]):
    __slots__ = ()

    def set(self) -> None:
        if not self.done():
            self.set_result(None)

    def is_set(self) -> bool:
        return self.done() and not self.cancelled()

    def wait(self) -> Awaitable[None]:
        # The future itself: awaiting it adds no coroutine frame to a parked task.
        return self


def waiter_factory() -> Callable[[], Waiter]:
    """The cheapest waiter for the event loop this is called in."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return anyio.Event

    def make() -> Waiter:
        return _FutureWaiter(loop=loop)

    return make
