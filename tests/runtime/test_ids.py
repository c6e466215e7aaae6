"""UUIDv7 ids: valid, unique, sortable, also across processes and a clock that steps back."""

from __future__ import annotations

import subprocess
import sys
import time
import types
import uuid

import pytest

import loom.runtime._ids as ids
from loom.runtime.lowlevel import new_id, now_ms


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A settable nanosecond clock for the id generator; its state is restored afterwards."""
    clock = [0]
    monkeypatch.setattr(ids, "time", types.SimpleNamespace(time_ns=lambda: clock[0]))
    monkeypatch.setattr(ids, "_last_ms", ids._last_ms)
    monkeypatch.setattr(ids, "_counter", ids._counter)
    return clock


def check_uuid7(text: str) -> uuid.UUID:
    value = uuid.UUID(text)
    assert str(value) == text  # canonical, lowercase, hyphenated
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    return value


def test_ids_are_valid_uuid7_with_the_creation_time() -> None:
    before = now_ms()
    value = check_uuid7(new_id())
    after = now_ms()
    assert before <= value.int >> 80 <= after


def test_now_ms_is_wall_clock_milliseconds() -> None:
    assert abs(now_ms() - time.time() * 1000) < 1000


def test_a_tight_loop_of_ids_is_unique_and_sorted() -> None:
    made = [new_id() for _ in range(100_000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    # Many share a millisecond, so the in-millisecond counter really was exercised.
    assert len({i[:13] for i in made}) < len(made) // 10
    for text in made[::10_000]:
        check_uuid7(text)


def test_ids_stay_sorted_when_the_clock_steps_back(fake_clock: list[int]) -> None:
    clock = fake_clock
    clock[0] = 2_000_000_000_000 * 1_000_000
    made = [new_id()]
    clock[0] -= 5_000 * 1_000_000  # five seconds back
    made += [new_id() for _ in range(3)]
    clock[0] += 10_000 * 1_000_000
    made.append(new_id())
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    stamps = [uuid.UUID(i).int >> 80 for i in made]
    assert stamps[:4] == [2_000_000_000_000] * 4  # the last millisecond is kept and counted on
    assert stamps[4] == 2_000_000_005_000


def test_a_full_counter_borrows_the_next_millisecond(fake_clock: list[int]) -> None:
    ms = 2_100_000_000_000
    fake_clock[0] = ms * 1_000_000
    first = new_id()
    ids._counter = ids._RAND_MASK
    borrowed = new_id()
    after = new_id()
    assert first < borrowed < after
    assert uuid.UUID(borrowed).int >> 80 == ms + 1
    for text in (first, borrowed, after):
        check_uuid7(text)


_MAKER = """
import sys
from loom.runtime.lowlevel import (new_id)
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.readline()  # start together with the other process
ids = [new_id() for _ in range(50_000)]
sys.stdout.write("\\n".join(ids) + "\\n")
"""


def test_two_processes_making_ids_at_the_same_time_do_not_collide() -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MAKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=30)[0].split() for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert all(proc.returncode is not None for proc in procs)
    first, second = (set(out) for out in outputs)
    assert len(first) == len(second) == 50_000
    assert not first & second
    # The test means something only if the two really made ids in the same milliseconds.
    assert {i[:13] for i in first} & {i[:13] for i in second}
