"""Barriers: release, early arrivals, timeouts with who was there, duplicates, mismatches,
expiry of silent participants, closing the coordinator."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from loom.runtime import Envelope, Event, EventBus, InvalidArgument, InvalidTopic
from loom.runtime.collab import (
    BarrierAborted,
    BarrierCoordinator,
    BarrierMismatch,
    BarrierResult,
    NoResponders,
    arrive,
)
from tests.runtime._collab_support import idle

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]


async def wait_until(cond: Callable[[], bool]) -> None:
    """Let other tasks run until ``cond`` holds (a readiness signal, not a sleep)."""
    with anyio.fail_after(2):
        while not cond():
            await anyio.lowlevel.checkpoint()


def waiting(coord: BarrierCoordinator, n: int) -> Callable[[], bool]:
    return lambda: coord.statistics().waiting == n


async def test_release_in_arrival_order_and_state_removed() -> None:
    async with EventBus() as bus, BarrierCoordinator(bus) as coord:
        results: dict[str, BarrierResult] = {}

        async def go(name: str) -> None:
            results[name] = await arrive(
                bus, barrier="phase.one", participant=name, parties=3, timeout=5, thread_id="t"
            )

        async with anyio.create_task_group() as tg:
            for i, name in enumerate(["a", "b", "c"]):
                tg.start_soon(go, name)
                # Each arrives (and is held by the coordinator) before the next one starts.
                if i < 2:
                    await wait_until(waiting(coord, i + 1))
        for res in results.values():
            assert res.complete
            assert not res.timed_out
            assert res.arrived == ("a", "b", "c")
            assert (res.barrier, res.thread_id, res.parties) == ("phase.one", "t", 3)
        stats = coord.statistics()
        assert (stats.open_barriers, stats.waiting, stats.released) == (0, 0, 1)

        # The same name and thread make a fresh round.
        async with anyio.create_task_group() as tg:
            tg.start_soon(go, "x")
            tg.start_soon(go, "y")
            tg.start_soon(go, "z")
        assert results["x"].arrived == results["z"].arrived
        assert set(results["x"].arrived) == {"x", "y", "z"}
        assert coord.statistics().released == 2
    assert idle(bus) == (0, 1)


async def on_thread(bus: EventBus, name: str, thread: str) -> None:
    await arrive(bus, barrier="b", participant=name, parties=2, timeout=5, thread_id=thread)


async def test_threads_are_separate_barriers() -> None:
    async with EventBus() as bus, BarrierCoordinator(bus) as coord:
        async with anyio.create_task_group() as tg:
            for thread in ("t1", "t2"):
                for name in ("a", "b"):
                    tg.start_soon(on_thread, bus, name, thread)
        assert coord.statistics().released == 2
        # A parent event's thread is used when no thread_id is given.
        parent = Event(envelope=Envelope(thread_id="from-parent"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: arrive(
                    bus, barrier="b", participant="a", parties=2, timeout=5, parent=parent
                )
            )
            await wait_until(lambda: coord.statistics().waiting == 1)
            res = await arrive(
                bus, barrier="b", participant="b", parties=2, timeout=5, thread_id="from-parent"
            )
        assert res.complete


async def test_timeout_withdraws_and_reports_who_was_there() -> None:
    async with EventBus() as bus, BarrierCoordinator(bus) as coord:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: arrive(bus, barrier="b", participant="patient", parties=3, timeout=60)
            )
            await wait_until(lambda: coord.statistics().waiting == 1)
            res = await arrive(bus, barrier="b", participant="hasty", parties=3, timeout=0.02)
            assert res.timed_out
            assert not res.complete
            assert res.arrived == ("patient", "hasty")
            stats = coord.statistics()
            assert (stats.waiting, stats.left) == (1, 1)
            # The one that left is not counted: two more are needed, and they complete it.
            tg.start_soon(lambda: arrive(bus, barrier="b", participant="c", parties=3, timeout=5))
            last = await arrive(bus, barrier="b", participant="d", parties=3, timeout=5)
        assert last.complete
        assert last.arrived == ("patient", "c", "d") or last.arrived == ("patient", "d", "c")
    assert idle(bus) == (0, 1)


async def test_duplicate_arrival_counts_once() -> None:
    async with EventBus() as bus, BarrierCoordinator(bus) as coord:
        results: list[BarrierResult] = []

        async def go(name: str) -> None:
            results.append(await arrive(bus, barrier="d", participant=name, parties=2, timeout=5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(go, "a")
            tg.start_soon(go, "a")
            await wait_until(
                lambda: coord.statistics().waiting == 1 and not tg.cancel_scope.cancel_called
            )
            await anyio.lowlevel.checkpoint()
            tg.start_soon(go, "b")
        assert len(results) == 3
        for res in results:
            assert res.complete
            assert res.arrived == ("a", "b")


async def test_mismatched_parties_are_refused() -> None:
    async with EventBus() as bus, BarrierCoordinator(bus) as coord, anyio.create_task_group() as tg:
        tg.start_soon(lambda: arrive(bus, barrier="m", participant="a", parties=2, timeout=5))
        await wait_until(lambda: coord.statistics().waiting == 1)
        with pytest.raises(BarrierMismatch) as info:
            await arrive(bus, barrier="m", participant="b", parties=3, timeout=5)
        err = info.value
        assert (err.barrier, err.thread_id, err.parties, err.given) == ("m", "", 2, 3)
        assert isinstance(err, InvalidArgument)
        assert coord.statistics().refused == 1
        assert coord.statistics().waiting == 1
        await arrive(bus, barrier="m", participant="c", parties=2, timeout=5)


async def test_a_silent_participant_expires() -> None:
    async with EventBus() as bus, BarrierCoordinator(bus, expiry_grace=0.01) as coord:
        # An arrival as a crashed remote process leaves it: no inbox, never a leave.
        meta = {"participant": "ghost", "parties": "2", "timeout": "0.01"}
        envelope = Envelope(reply_to="_inbox.gone", correlation_id="c-1")
        await bus.publish(
            "loom.barrier.x", Event(type="barrier.arrive", metadata=meta, envelope=envelope)
        )
        await wait_until(lambda: coord.statistics().waiting == 1)
        # The coordinator wakes for the expiry by itself; poll its counter meanwhile.
        with anyio.fail_after(2):
            while coord.statistics().expired == 0:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        assert coord.statistics().open_barriers == 0
        # Malformed arrivals are refused, not crashing the coordinator.
        await bus.publish(
            "loom.barrier.x",
            Event(type="barrier.arrive", metadata={"parties": "two"}, envelope=envelope),
        )
        await wait_until(lambda: coord.statistics().refused == 1)
        assert coord.statistics().open_barriers == 0


async def test_no_coordinator_and_closed_coordinator() -> None:
    async with EventBus() as bus:
        with anyio.fail_after(2), pytest.raises(NoResponders):
            await arrive(bus, barrier="n", participant="a", parties=2, timeout=60)
        coord = BarrierCoordinator(bus)
        failures: list[BaseException] = []

        async def go() -> None:
            try:
                await arrive(bus, barrier="n", participant="a", parties=2, timeout=60)
            except BarrierAborted as exc:
                failures.append(exc)

        async with coord, anyio.create_task_group() as tg:
            tg.start_soon(go)
            await wait_until(lambda: coord.statistics().waiting == 1)
            await coord.aclose()
        assert len(failures) == 1
        assert isinstance(failures[0], BarrierAborted)
        assert idle(bus) == (0, 1)


async def test_cancelled_participant_withdraws() -> None:
    async with EventBus() as bus, BarrierCoordinator(bus) as coord:
        baseline = idle(bus)
        with anyio.move_on_after(0.02) as scope:
            await arrive(bus, barrier="c", participant="a", parties=2, timeout=60)
        assert scope.cancelled_caught
        await wait_until(lambda: coord.statistics().open_barriers == 0)
        assert coord.statistics().left == 1
        assert idle(bus) == baseline  # only the coordinator's loom.barrier.>


async def test_bad_arguments() -> None:
    async with EventBus() as bus:
        cases: list[tuple[dict[str, object], type[Exception], str]] = [
            ({"participant": ""}, InvalidArgument, "participant"),
            ({"barrier": ""}, InvalidArgument, "barrier"),
            ({"parties": 0}, InvalidArgument, "parties"),
            ({"parties": True}, InvalidArgument, "parties"),
            ({"timeout": 0}, InvalidArgument, "timeout"),
            ({"sender": "a.b"}, InvalidArgument, "sender"),
            ({"barrier": "bad name"}, InvalidTopic, "whitespace"),
        ]
        for kwargs, error, message in cases:
            args: dict[str, object] = {
                "barrier": "b",
                "participant": "p",
                "parties": 2,
                "timeout": 1,
            }
            args.update(kwargs)
            with pytest.raises(error, match=message):
                await arrive(bus, **args)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="expiry_grace"):
            BarrierCoordinator(bus, expiry_grace=0)
        with pytest.raises(InvalidTopic):
            BarrierCoordinator(bus, prefix="a.>")
        assert idle(bus) == (0, 1)
