"""Unique, time-sortable ids: UUIDv7 (RFC 9562) with a monotonic counter.

Layout: 48 bits of Unix milliseconds, then 74 bits that start at a fresh random value each
millisecond and count up by one for every further id inside the same millisecond (RFC 9562
"method 2"). So ids made by one process sort in creation order even within one millisecond,
and ids made by different processes collide only if two random 74-bit starting points land
within a few counts of each other (about 2**-60 per millisecond at a million ids per second).
The clock never runs backwards here: a clock step back keeps the last millisecond and counts on.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id", "now_ms"]

_RAND_BITS = 74
_RAND_MASK = (1 << _RAND_BITS) - 1
_last_ms = 0
_counter = 0
_prefix = ""  # the formatted time part of _last_ms, made once per millisecond
_lock = threading.Lock()  # sync capabilities run in worker threads and make events too


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """A new UUIDv7 string, unique and sortable by creation time."""
    global _last_ms, _counter, _prefix
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7"
            # The top bit stays clear so a whole millisecond of increments cannot overflow.
            _counter = int.from_bytes(os.urandom(10)) & (_RAND_MASK >> 1)
        else:
            _counter += 1
            if _counter > _RAND_MASK:  # 2**73 ids in one millisecond: borrow the next one
                _last_ms += 1
                _prefix = f"{_last_ms >> 16:08x}-{_last_ms & 0xFFFF:04x}-7"
                _counter = 0
        prefix, counter = _prefix, _counter
    # version 7 (in the prefix), 12 bits of counter, the RFC 4122 variant, 62 bits of counter
    tail = f"{(0b10 << 62) | (counter & ((1 << 62) - 1)):016x}"
    return f"{prefix}{counter >> 62:03x}-{tail[:4]}-{tail[4:]}"
