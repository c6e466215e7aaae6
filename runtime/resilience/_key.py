"""The idempotency key of the call being made, as the tool (or responder) receives it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = [
    "IDEMPOTENCY_HEADER",
    "current_idempotency_key",
    "idempotency_key",
    "key_from_headers",
    "key_headers",
]

IDEMPOTENCY_HEADER = "loom-idempotency-key"
"""The header a tool call's key travels in to another process or node (``ToolCall.headers``
over the bridge, ``CallRequest.headers`` between cluster nodes)."""

_key: ContextVar[str | None] = ContextVar("loom_idempotency_key", default=None)


def current_idempotency_key() -> str | None:
    """The idempotency key of the tool call running in this task, or ``None``.

    Every attempt of one call (the first and each retry) sees the same key, so a tool that
    has side effects can do them once per key. The registry sets it around the tool's
    ``call``; an MCP tool sends it to its server as ``_meta.idempotencyKey``.
    """
    return _key.get()


@contextmanager
def idempotency_key(key: str | None) -> Iterator[None]:
    """Make ``key`` the :func:`current_idempotency_key` within the block (the registry's, or
    a caller's own for a call it makes some other way). ``None``: no key within the block
    (the registry's, for a call made without one inside a keyed call: that is a call of its
    own, and the outer key must neither reach its tool nor travel on with it)."""
    token = _key.set(key)
    try:
        yield
    finally:
        _key.reset(token)


def key_headers() -> dict[str, str]:
    """The current call's key as headers for the process or node that serves it (none for
    a call without a key)."""
    key = _key.get()
    return {IDEMPOTENCY_HEADER: key} if key else {}


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The key a call's headers carry, or ``None``."""
    return headers.get(IDEMPOTENCY_HEADER) or None
