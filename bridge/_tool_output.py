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
from collections.abc import Mapping
from typing import Final

from loom.runtime.lowlevel import MAX_TOOL_OUTPUT_PIECES as MAX_PIECES
from loom.runtime.lowlevel import ToolOutputPieces as Pieces
from loom.runtime.lowlevel import drain_pieces_until as drain_until
from loom.runtime.lowlevel import output_pieces as relay

__all__ = ["MAX_PIECES", "WANTS_OUTPUT", "Pieces", "drain_until", "relay", "report_drops", "wants"]

# The buffer, its bound and its draining are the runtime's (runtime/tools/_output_relay.py),
# shared with the cluster's calls between nodes, so both carry pieces the same way.
WANTS_OUTPUT: Final = "loom-tool-output"
"""The ToolCall header by which a caller on a stream with the feature says it takes the
call's partial output ("1"); without it the serving side streams nothing (no frames for a
caller that has no sink, as in process)."""

log = logging.getLogger("loom.bridge.tool_output")


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
