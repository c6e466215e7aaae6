"""Waiting, at a node's start, for JetStream to serve what the node needs.

Connected to a NATS server is not yet served by JetStream: on a NATS cluster that is
starting (or restarting, or has lost servers), the meta group and each stream's replicas
elect their leaders first, and until then JetStream answers ``503`` or nothing at all. A
node that starts meanwhile (under load, a few seconds are easily lost) waits for it, as it
waits for nothing else, bounded: it says once what it waits for, and gives up with
:class:`~loom.cluster.JetStreamUnavailable` when the bound has passed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import anyio
import nats.errors
import nats.js.errors

from ._errors import JetStreamUnavailable

__all__ = ["AVAILABLE_WAIT_S", "UNAVAILABLE", "until_available"]

log = logging.getLogger("loom.nats")

T = TypeVar("T")

# How long a starting node waits for JetStream: an election takes seconds; a NATS cluster
# started at the same moment as the nodes, on a loaded machine, tens of them.
AVAILABLE_WAIT_S: Final = 60.0

# What JetStream answers while it is away for a moment: not up yet ("no responders"), a
# stream whose replicas elect a leader (503: "no response from stream", "JetStream system
# temporarily unavailable"), or nothing (the request times out: no meta leader to answer).
UNAVAILABLE: Final = (
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)

_RETRY_S: Final = 0.25


async def until_available(
    what: str, attempt: Callable[[], Awaitable[T]], *, wait_s: float = AVAILABLE_WAIT_S
) -> T:
    """``attempt()``, asked again while JetStream is unavailable, for at most ``wait_s``.

    Args:
        what: what is waited for, in words ("the directory's bucket loom_directory").
        attempt: one try; raises one of :data:`UNAVAILABLE` while JetStream is away.
        wait_s: the bound.

    Raises:
        JetStreamUnavailable: still unavailable after ``wait_s``.
    """
    start = anyio.current_time()
    said = False
    while True:
        try:
            served = await attempt()
        except UNAVAILABLE as exc:
            waited = anyio.current_time() - start
            reason = _reason(exc)
            if waited >= wait_s:
                raise JetStreamUnavailable(what, wait_s, reason) from exc
            if not said:
                said = True
                log.warning(
                    "nats: waiting up to %g s for JetStream to serve %s (%s: no leader "
                    "elected yet?)",
                    wait_s,
                    what,
                    reason,
                )
        else:
            if said:
                log.info(
                    "nats: JetStream serves %s (after %.1f s)", what, anyio.current_time() - start
                )
            return served
        await anyio.sleep(_RETRY_S)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, nats.errors.TimeoutError):
        return "no answer"
    if isinstance(exc, nats.errors.NoRespondersError):
        return "no responders"
    description = getattr(exc, "description", None)
    return str(description or exc or type(exc).__name__)
