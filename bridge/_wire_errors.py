"""The error of the wire layer: a ``loom.v1`` message that does not make a runtime value."""

from __future__ import annotations

from loom.runtime import LoomError

__all__ = ["WireError"]


class WireError(LoomError, ValueError):
    """A wire message (or a runtime value bound for the wire) is malformed; nothing was made.

    The bridge answers it with ``INVALID_ARGUMENT`` (or an ``Error`` frame on a stream) and
    carries on: one bad message never ends a connection.

    Attributes:
        field: where the problem is, e.g. ``"Event.metadata['ttl']"``.
        reason: what is wrong with it, in words.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"malformed {field}: {reason}")
        self.field = field
        self.reason = reason
