"""Awaiting grpc.aio calls under anyio: the one place its cancellation quirk is handled.

Used by every client of the bridge (``BridgeClient`` and ``AdminClient``), so a cancel scope
around any of their calls cancels them as anyio promises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import anyio
import anyio.lowlevel
import grpc.aio

from ._errors import ConnectionLost

__all__ = ["rpc_text", "unary"]

_R = TypeVar("_R")


def _cancelling() -> bool:
    """Whether the current task is being cancelled (by a cancel scope), as opposed to a
    ``CancelledError`` that grpc.aio raised for a call it cancelled itself."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


async def unary(call: Awaitable[_R]) -> _R:
    """Await a unary grpc.aio call so that cancellation stays anyio's.

    grpc.aio answers the cancellation of a task awaiting a unary call with a fresh, bare
    ``CancelledError`` (its internal task's), which anyio's cancel scope does not recognise as
    the one it sent, and lets through. Caught here: the scope delivers its cancellation again
    at the next checkpoint, as its own. A ``CancelledError`` with no scope behind it (grpc
    cancelled the call itself) becomes :class:`ConnectionLost`.

    Raises:
        grpc.aio.AioRpcError: the call failed.
        ConnectionLost: grpc cancelled the call by itself.
    """
    try:
        return await call
    except asyncio.CancelledError:
        if _cancelling():
            await anyio.lowlevel.checkpoint()
            raise  # not reached while a scope is cancelling this task
        raise ConnectionLost("grpc cancelled the call") from None


def rpc_text(exc: grpc.aio.AioRpcError) -> str:
    """A failed call's reason in a few words on one line, for a log line or an error message.

    A server that cannot be reached is ``connection refused`` (or the C core's last words on
    it), not the nested ``failed to connect to all addresses; last error: ...`` text grpc
    gives, and never its multi-line repr with a ``debug_error_string``.
    """
    code = exc.code()
    details = (exc.details() or "").strip().splitlines()
    text = details[0] if details else ""
    if code is grpc.StatusCode.UNAVAILABLE:
        lowered = text.lower()
        if "connection refused" in lowered:
            return "connection refused"
        if "dns resolution failed" in lowered or "name resolution" in lowered:
            return "cannot resolve the host name"
        if "failed to connect to all addresses" in lowered and ": " in text:
            # "...; last error: UNKNOWN: ipv4:1.2.3.4:5: <what the socket said>"
            return text.rsplit(": ", 1)[1].strip() or "unavailable"
        return text or "unavailable"
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return "no answer in time"
    return f"{code.name}: {text}" if text else code.name
