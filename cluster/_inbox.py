"""A NATS subscription's messages, taken without a task per message.

nats-py's ``Subscription.messages`` iterator (and ``next_msg``) starts a task and an
``asyncio.wait`` for every message it hands over: about 12 µs of CPU each on a 2-core
machine, paid per cluster frame and per acknowledgement on both nodes
(``docs/performance.md``). A callback subscription instead has nats-py's own
per-subscription task await its queue and call :meth:`Inbox.put`, which hands each message
on, in order, through a small bounded anyio stream that the transport's reader (a task of
its task group) iterates.

Bounds: nats-py's queue (its ``pending_msgs_limit``, past which it drops and says so
through the connection's error callback) and this stream's ``size`` behind it. A full
stream holds nats-py's task in :meth:`put`, so its queue fills: the same backpressure and
the same drop point as with the iterator, ``size`` messages later.
"""

from __future__ import annotations

import anyio
from nats.aio.msg import Msg

__all__ = ["Inbox"]


class Inbox:
    """The messages of one callback subscription (``cb=inbox.put``), in arrival order."""

    __slots__ = ("_receive", "_send")

    def __init__(self, size: int = 64) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[Msg](size)

    async def put(self, msg: Msg) -> None:
        """(nats-py's callback) Queue ``msg``; waits while the stream is full."""
        try:
            try:
                self._send.send_nowait(msg)
            except anyio.WouldBlock:
                await self._send.send(msg)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # a straggler after the transport stopped: nobody takes it any more

    def waiting(self) -> bool:
        """Whether a message is queued here, ready to be taken at once."""
        return self._receive.statistics().current_buffer_used > 0

    def close(self) -> None:
        """Release the stream (after the subscription is gone); a waiting reader ends."""
        self._send.close()
        self._receive.close()

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> Msg:
        # The readers yield per frame themselves (or have nothing else to do), and the
        # stream fills only while nats-py's task runs: no checkpoint per message here.
        try:
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            pass
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None
