"""The idempotency key of the call being made, as the tool (or responder) receives it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_idempotency_key", "idempotency_key"]

_key: ContextVar[str | None] = ContextVar("loom_idempotency_key", default=None)


def current_idempotency_key() -> str | None:
    """The idempotency key of the tool call running in this task, or ``None``.

    Every attempt of one call (the first and each retry) sees the same key, so a tool that
    has side effects can do them once per key. The registry sets it around the tool's
    ``call``; an MCP tool sends it to its server as ``_meta.idempotencyKey``.
    """
    return _key.get()


@contextmanager
def idempotency_key(key: str) -> Iterator[None]:
    """Make ``key`` the :func:`current_idempotency_key` within the block (the registry's, or
    a caller's own for a call it makes some other way)."""
    token = _key.set(key)
    try:
        yield
    finally:
        _key.reset(token)
