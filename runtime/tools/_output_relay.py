"""The pieces of a tool call's partial output on their way back to its caller in this process.

A call that leaves the process (over the bridge's stream, or to another node of a cluster)
may have its partial output (:func:`~loom.runtime.tools.stream_tool_output`) come back before
its result. Whatever carries it back has one reader that must never wait for one caller (it
carries every other message too): it puts each piece in the call's :class:`ToolOutputPieces`,
bounded at :data:`MAX_TOOL_OUTPUT_PIECES`, and the task waiting for the call's result hands
them to the caller's sink in order with :func:`drain_pieces_until`, before it returns the
result. A caller slower than the pieces come drops the newest ones, counted, never the result.

One class for every transport, so the bound and the drop counting are the same wherever the
tool runs (``bridge/_tool_output.py``, ``cluster/_calls.py``).
"""

from __future__ import annotations

from collections import deque
from typing import Final

import anyio

from ._output import ToolOutputSink, current_tool_output_sink

__all__ = ["MAX_TOOL_OUTPUT_PIECES", "ToolOutputPieces", "drain_pieces_until", "output_pieces"]

MAX_TOOL_OUTPUT_PIECES: Final = 64
"""Pieces of one call waiting for its caller; beyond: dropped, counted."""


class ToolOutputPieces:
    """The pieces of one call's partial output, between the transport's reader and the caller."""

    __slots__ = ("_wake", "done", "dropped", "items", "sink")

    def __init__(self, sink: ToolOutputSink | None) -> None:
        self.sink = sink
        self.items: deque[str] = deque()
        self.dropped = 0
        self.done = False  # the result (or the end) is in: nothing more is taken
        self._wake = anyio.Event()

    def put(self, text: str) -> None:
        """A piece from the transport (its reader: never waits)."""
        if self.done or self.sink is None or not text:
            return
        if len(self.items) >= MAX_TOOL_OUTPUT_PIECES:
            self.dropped += 1
        else:
            self.items.append(text)
        self._wake.set()

    def finish(self) -> None:
        """The call is over (its result came, or the transport ended): wake the waiter."""
        self.done = True
        self._wake.set()

    async def drain(self) -> None:
        """Hand the pieces to the sink until :meth:`finish`, then those still queued."""
        sink = self.sink
        while True:
            while self.items:
                assert sink is not None
                await sink(self.items.popleft())
            if self.done:
                return
            self._wake = anyio.Event()
            await self._wake.wait()


async def drain_pieces_until(pieces: ToolOutputPieces, done: anyio.Event) -> None:
    """Hand ``pieces`` to their sink until ``done`` is set (the call's result is in, or it
    ended), then those queued before it: every piece reaches the caller before the result."""

    async def watch() -> None:
        await done.wait()
        pieces.finish()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await pieces.drain()
        tg.cancel_scope.cancel()


def output_pieces() -> ToolOutputPieces | None:
    """The pieces buffer of a call about to leave this process, if its caller takes partial
    output (a sink is in force); ``None`` otherwise (nothing is kept)."""
    sink = current_tool_output_sink()
    return None if sink is None else ToolOutputPieces(sink)
