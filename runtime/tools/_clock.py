"""``clock.now``: the current time, the one thing a model cannot know by itself."""

from __future__ import annotations

import time

import msgspec

from ._tool import JSONObject

__all__ = ["ClockNow", "Now"]


class Now(msgspec.Struct, frozen=True, kw_only=True):
    """The answer of ``clock.now``.

    Attributes:
        utc: the time in UTC, ISO 8601 with a ``Z``, to the second.
        unix_ms: the same instant in Unix milliseconds.
    """

    utc: str
    unix_ms: int


class ClockNow:
    """``clock.now``: the current time in UTC (no arguments, no side effects)."""

    name = "clock.now"
    description = "The current date and time in UTC (ISO 8601) and as Unix milliseconds."

    def __init__(self) -> None:
        self.parameters_schema: JSONObject = {
            "type": "object",
            "properties": {},
            "additionalProperties": False,
        }

    async def call(self, arguments: JSONObject) -> Now:
        now_ms = time.time_ns() // 1_000_000
        utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_ms / 1000))
        return Now(utc=utc, unix_ms=now_ms)
