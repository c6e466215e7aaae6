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
# Everything before the last group, for the counter's bits above the low 48 (and _prefix):
# it changes once per 2**48 ids of a millisecond, so each id formats only its last 48 bits
# (one small f-string instead of a 64-bit one, a slice and another f-string: this runs for
# every event, and was most of what making an Event cost).
_head = ""
_head_hi = -1
_LOW_MASK = (1 << 48) - 1
_lock = threading.Lock()  # sync capabilities run in worker threads and make events too


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """A new UUIDv7 string, unique and sortable by creation time."""
    global _last_ms, _counter, _prefix, _head, _head_hi
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            _prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7"
            # The top bit stays clear so a whole millisecond of increments cannot overflow.
            _counter = int.from_bytes(os.urandom(10)) & (_RAND_MASK >> 1)
            _head_hi = -1
        else:
            _counter += 1
            if _counter > _RAND_MASK:  # 2**73 ids in one millisecond: borrow the next one
                _last_ms += 1
                _prefix = f"{_last_ms >> 16:08x}-{_last_ms & 0xFFFF:04x}-7"
                _counter = 0
                _head_hi = -1
        counter = _counter
        hi = counter >> 48
        if hi != _head_hi:
            # version 7 (in the prefix), 12 bits of counter, then the RFC 4122 variant (0b10)
            # and 14 more bits of counter
            _head = f"{_prefix}{hi >> 14:03x}-{0x8000 | (hi & 0x3FFF):04x}-"
            _head_hi = hi
        head = _head
    # the counter's low 48 bits
    return f"{head}{counter & _LOW_MASK:012x}"
