"""Partial output of a running tool, handed to whoever called it.

A tool that produces its result piece by piece (a remote A2A agent streaming its answer, say)
calls :func:`stream_tool_output` with each piece; the caller decides where the pieces go by
calling the tool inside :func:`tool_output_sink`. The sink travels in a context variable, so it
reaches the tool through every layer in between (``ctx.tool``, the runtime, the registry's
timeout) without any of them knowing, and a tool called with no sink in place just returns its
result. The LLM loop sets one around each tool call and publishes the pieces as
``turn.tool_output`` events on the agent's stream topic (``runtime/cognition/_loop.py``).

Across processes the bridge carries the pieces (``STREAM_FEATURE_TOOL_OUTPUT``,
docs/bridge.md): it reads the caller's sink with :func:`current_tool_output_sink` where the
call leaves the process, and sets a sink of its own (one sending the pieces on the stream)
where the call is served, so the same code streams wherever its caller lives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar

__all__ = [
    "ToolOutputSink",
    "current_tool_output_sink",
    "stream_tool_output",
    "tool_output_sink",
]

ToolOutputSink = Callable[[str], Awaitable[None]]
"""Receives one piece of a running tool's partial output, as text."""

_sink: ContextVar[ToolOutputSink | None] = ContextVar("loom_tool_output_sink", default=None)


async def stream_tool_output(text: str) -> None:
    """Hand ``text``, a piece of the running tool's partial output, to its caller's sink.

    Awaited in line: a slow sink slows the tool (the sink bounds itself; the loop's publishes on
    the bus with its backpressure). Without a sink, or for an empty ``text``, nothing happens.
    """
    sink = _sink.get()
    if sink is not None and text:
        await sink(text)


def current_tool_output_sink() -> ToolOutputSink | None:
    """The sink in force here (``None``: nobody takes partial output): what a transport reads
    where a call leaves the process, to hand it the pieces that come back."""
    return _sink.get()


@contextlib.contextmanager
def tool_output_sink(sink: ToolOutputSink | None) -> Iterator[None]:
    """Within the block, tools called from this task (and tasks it starts) stream to ``sink``.

    ``None`` switches partial output off within the block. Example::

        async def show(text: str) -> None:
            print(text, end="", flush=True)

        with tool_output_sink(show):
            answer = await ctx.tool("a2a.weather", {"message": "Rain in Oslo tomorrow?"})
    """
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)
