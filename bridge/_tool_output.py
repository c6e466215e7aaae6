"""Partial tool output on the stream (``STREAM_FEATURE_TOOL_OUTPUT``): the receiving half.

A call that crosses an ``EventStream`` (an agent's ``call`` served by the server, or a
``tool_call`` the server pushes to an agent) may stream pieces of its output
(``loom.runtime.tools.stream_tool_output``) before its result. The sending side simply
streams into a sink that queues a ``ToolOutput`` frame on the stream's outbound queue, ahead
of the result: the queue is bounded (in frames and bytes), so a slow stream holds the tool
back rather than growing memory, and the result, queued after, cannot overtake a piece.

The receiving side is the stream's reader, which must never wait for one caller (it carries
every other frame of the stream): it puts each piece in the call's :class:`Pieces`, bounded
at :data:`MAX_PIECES`, and the task waiting for the call's result hands them to the caller's
sink in order, before it returns the result. A caller slower than that drops the newest
pieces, counted (and logged once the call ends), never the result.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import Final

import anyio

from loom.runtime.lowlevel import current_tool_output_sink
from loom.runtime.tools import ToolOutputSink

__all__ = ["MAX_PIECES", "WANTS_OUTPUT", "Pieces", "drain_until", "relay", "report_drops", "wants"]

MAX_PIECES: Final = 64  # pieces of one call waiting for its caller; beyond: dropped, counted
WANTS_OUTPUT: Final = "loom-tool-output"
"""The ToolCall header by which a caller on a stream with the feature says it takes the
call's partial output ("1"); without it the serving side streams nothing (no frames for a
caller that has no sink, as in process)."""

log = logging.getLogger("loom.bridge.tool_output")


class Pieces:
    """The pieces of one call's partial output, between the stream's reader and the caller."""

    __slots__ = ("_wake", "done", "dropped", "items", "sink")

    def __init__(self, sink: ToolOutputSink | None) -> None:
        self.sink = sink
        self.items: deque[str] = deque()
        self.dropped = 0
        self.done = False  # the result (or the end) is in: nothing more is taken
        self._wake = anyio.Event()

    def put(self, text: str) -> None:
        """A piece from the stream (the reader: never waits)."""
        if self.done or self.sink is None or not text:
            return
        if len(self.items) >= MAX_PIECES:
            self.dropped += 1
        else:
            self.items.append(text)
        self._wake.set()

    def finish(self) -> None:
        """The call is over (its result came, or the stream ended): wake the waiter."""
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


async def drain_until(pieces: Pieces, done: anyio.Event) -> None:
    """Hand ``pieces`` to their sink until ``done`` is set (the call's result is in, or it
    ended), then those queued before it: every piece reaches the caller before the result."""

    async def watch() -> None:
        await done.wait()
        pieces.finish()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await pieces.drain()
        tg.cancel_scope.cancel()


def relay() -> Pieces | None:
    """The pieces buffer of a call about to leave this process, if its caller takes partial
    output (a sink is in force); ``None`` otherwise (nothing is kept)."""
    sink = current_tool_output_sink()
    return None if sink is None else Pieces(sink)


def wants(headers: Mapping[str, str]) -> bool:
    """Whether the call's caller takes its partial output (:data:`WANTS_OUTPUT`)."""
    return headers.get(WANTS_OUTPUT) == "1"


def report_drops(pieces: Pieces | None, call_id: str, name: str) -> None:
    """Say how many pieces of a finished call were dropped (a caller slower than the tool)."""
    if pieces is not None and pieces.dropped:
        log.warning(
            "tool call %s (%s): %d pieces of its partial output dropped: its caller took them "
            "more slowly than they came (at most %d wait)",
            name,
            call_id,
            pieces.dropped,
            MAX_PIECES,
        )
