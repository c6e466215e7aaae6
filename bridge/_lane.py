"""A lean bounded FIFO between the tasks of one stream (asyncio only, as grpc.aio is).

It replaces ``anyio.create_memory_object_stream`` on the bridge's per-event paths. An anyio
memory stream yields to the event loop on every ``send()`` and every ``receive()``, even when
it need not wait, and wakes a receiver through an ``anyio.Event``: a hand-over costs about
12 us on this machine, against about 3 us for a bare future. A stream of single events pays
several hand-overs per event in each process, so that difference decided the unbatched figure
of ``benchmarks/bridge.py``.

Semantics are those of the memory stream it replaces, with the same exceptions, so callers
keep their ``except`` clauses:

* FIFO; ``send`` waits for room, ``receive`` for an item; waiters are served oldest first.
* ``send_nowait`` / ``receive_nowait`` raise ``anyio.WouldBlock`` instead of waiting.
* ``close()`` closes the sending side: receivers take what is queued, then get
  ``anyio.EndOfStream``; senders get ``anyio.ClosedResourceError``.
* ``close_receiving()`` closes the receiving side: what is queued is dropped, senders get
  ``anyio.BrokenResourceError``, receivers ``anyio.ClosedResourceError``.
* Cancellation: a cancelled ``send`` queued nothing; a cancelled ``receive`` took nothing (a
  wake-up it was given passes to the next waiter).
* ``receive`` yields to the loop when it waits, and at least every 256 calls otherwise, so
  a consumer that always finds an item still lets other tasks run (256: a full batch, the
  cadence at which a saturated publisher yields too, ``bridge/_client_session.py``).
* Optionally bounded in bytes too (``max_bytes``, each item measured once by ``size`` as it
  is queued): an item that does not fit waits (or ``WouldBlock``) like one that finds no
  place; an item larger than the whole bound goes into an empty lane (else it never could),
  and items of size 0 (markers) are never held back by bytes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final, Generic, TypeVar

import anyio
import anyio.lowlevel

__all__ = ["Lane"]

T = TypeVar("T")

_YIELD_EVERY: Final = 256


class Lane(Generic[T]):
    """A bounded FIFO with ``max_size`` places (see the module docs)."""

    __slots__ = (
        "_buf",
        "_bytes",
        "_getters",
        "_max",
        "_max_bytes",
        "_putters",
        "_recv_closed",
        "_send_closed",
        "_size",
        "_sizes",
        "_tick",
    )

    def __init__(
        self,
        max_size: int,
        *,
        max_bytes: int | None = None,
        size: Callable[[T], int] | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, not {max_size}")
        if (max_bytes is None) != (size is None):
            raise ValueError("max_bytes and size go together")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        self._max = max_size
        self._max_bytes = max_bytes or 0
        self._size = size
        self._bytes = 0  # what the queued items measure, with a byte bound
        self._sizes: deque[int] = deque()  # their sizes, in queue order
        self._buf: deque[T] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._send_closed = False
        self._recv_closed = False
        self._tick = 0

    def __len__(self) -> int:
        return len(self._buf)

    # ------------------------------------------------------------------ sending

    def send_nowait(self, item: T) -> None:
        """Queue ``item`` if there is room.

        Raises:
            anyio.WouldBlock: the lane is full (or senders wait for room before this one).
            anyio.ClosedResourceError: the sending side is closed.
            anyio.BrokenResourceError: the receiving side is closed.
        """
        if self._send_closed:
            raise anyio.ClosedResourceError
        if self._recv_closed:
            raise anyio.BrokenResourceError
        if len(self._buf) >= self._max or self._putters:
            raise anyio.WouldBlock
        if self._size is not None:
            self._count_in(item)
        self._buf.append(item)
        if self._getters:
            _wake(self._getters)

    def send_sized_nowait(self, item: T, n: int) -> None:
        """:meth:`send_nowait` of an item the caller has measured already (``n``: what the
        lane's ``size`` gives for it; ignored without a byte bound). The per-event paths know
        the size, so the size function is not called again (two calls fewer per event)."""
        if self._send_closed:
            raise anyio.ClosedResourceError
        if self._recv_closed:
            raise anyio.BrokenResourceError
        buf = self._buf
        if len(buf) >= self._max or self._putters:
            raise anyio.WouldBlock
        if self._size is not None:
            if n and buf and self._bytes + n > self._max_bytes:
                raise anyio.WouldBlock
            self._bytes += n
            self._sizes.append(n)
        buf.append(item)
        if self._getters:
            _wake(self._getters)

    def _count_in(self, item: T) -> None:
        """Count ``item``'s bytes in, or raise ``WouldBlock`` if they do not fit."""
        assert self._size is not None
        n = self._size(item)
        if n and self._buf and self._bytes + n > self._max_bytes:
            raise anyio.WouldBlock
        self._bytes += n
        self._sizes.append(n)

    def fits(self, n: int) -> bool:
        """Whether an item measuring ``n`` would be queued by :meth:`send_nowait` now (open
        both ways, a free place, nobody waiting before it, and its bytes fit): lets a sender
        skip building an item it could not queue."""
        if self._send_closed or self._recv_closed or self._putters or len(self._buf) >= self._max:
            return False
        return self._size is None or not n or not self._buf or self._bytes + n <= self._max_bytes

    @property
    def queued_bytes(self) -> int:
        """What the queued items measure (0 without a byte bound)."""
        return self._bytes

    async def send(self, item: T) -> None:
        """Queue ``item``, waiting for room; no yield when there is room at once."""
        while True:
            try:
                self.send_nowait(item)
                return
            except anyio.WouldBlock:
                pass
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                await waiter
            except BaseException:
                _abandon(waiter, self._putters)
                raise
            # Woken: there is room now (or the lane closed). Take the room before any sender
            # that comes later: it sees us gone from the queue of putters only now.
            if not self._send_closed and not self._recv_closed and len(self._buf) < self._max:
                if self._size is not None:
                    try:
                        self._count_in(item)
                    except anyio.WouldBlock:
                        continue  # a place, but not the bytes: wait again
                self._buf.append(item)
                if self._getters:
                    _wake(self._getters)
                if self._putters and len(self._buf) < self._max:
                    _wake(self._putters)
                return

    def close(self) -> None:
        """Close the sending side (idempotent): receivers drain, then ``EndOfStream``."""
        self._send_closed = True
        _wake_all(self._getters)
        _wake_all(self._putters)

    # ------------------------------------------------------------------ receiving

    def peek(self) -> Iterator[T]:
        """The queued items, oldest first, left in the lane (do not send or receive while
        iterating)."""
        return iter(self._buf)

    def receive_nowait(self) -> T:
        """Take the oldest item if there is one.

        Raises:
            anyio.WouldBlock: nothing is queued.
            anyio.EndOfStream: nothing is queued and the sending side is closed.
            anyio.ClosedResourceError: the receiving side is closed.
        """
        if self._recv_closed:
            raise anyio.ClosedResourceError
        buf = self._buf
        if not buf:
            if self._send_closed:
                raise anyio.EndOfStream
            raise anyio.WouldBlock
        item = buf.popleft()
        if self._size is not None:
            self._bytes -= self._sizes.popleft()
        if self._putters:
            _wake(self._putters)
        return item

    async def receive(self) -> T:
        """Take the oldest item, waiting for one."""
        self._tick += 1
        if self._tick >= _YIELD_EVERY:
            self._tick = 0
            await anyio.lowlevel.checkpoint()
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                pass
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                _abandon(waiter, self._getters)
                raise

    def close_receiving(self) -> None:
        """Close the receiving side (idempotent): the queue is dropped, senders fail."""
        self._recv_closed = True
        self._buf.clear()
        self._sizes.clear()
        self._bytes = 0
        _wake_all(self._getters)
        _wake_all(self._putters)

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None


def _wake(waiters: deque[asyncio.Future[None]]) -> None:
    """Wake the oldest waiter that is still waiting."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


def _wake_all(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)


def _abandon(waiter: asyncio.Future[None], waiters: deque[asyncio.Future[None]]) -> None:
    """A waiter was cancelled: leave the queue, or pass on the wake-up it was given."""
    try:
        waiters.remove(waiter)
    except ValueError:
        if waiter.done() and not waiter.cancelled():
            _wake(waiters)
    else:
        waiter.cancel()
