"""The bridge's lean FIFO between a stream's tasks: the semantics of an anyio memory stream."""

from __future__ import annotations

import anyio
import pytest

from loom.bridge._lane import Lane

pytestmark = pytest.mark.anyio  # asyncio only: so is grpc.aio, which the lane serves


async def test_items_come_out_in_order_and_the_bound_holds() -> None:
    lane = Lane[int](3)
    for i in range(3):
        lane.send_nowait(i)
    with pytest.raises(anyio.WouldBlock):
        lane.send_nowait(3)
    assert len(lane) == 3
    assert [await lane.receive() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(anyio.WouldBlock):
        lane.receive_nowait()


async def test_a_sender_waits_for_room_and_senders_are_served_oldest_first() -> None:
    lane = Lane[int](1)
    lane.send_nowait(0)
    order: list[int] = []

    async def send(i: int) -> None:
        await lane.send(i)
        order.append(i)

    async with anyio.create_task_group() as tg:
        for i in (1, 2, 3):
            tg.start_soon(send, i)
            await anyio.wait_all_tasks_blocked()
        with pytest.raises(anyio.WouldBlock):  # waiting senders come before a new one
            lane.send_nowait(9)
        got = [await lane.receive() for _ in range(4)]
    assert got == [0, 1, 2, 3]
    assert order == [1, 2, 3]


async def test_a_receiver_waits_for_an_item() -> None:
    lane = Lane[str](2)
    got: list[str] = []

    async def receive() -> None:
        got.append(await lane.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(receive)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        lane.send_nowait("x")
    assert got == ["x"]


async def test_close_lets_receivers_drain_then_ends_the_stream() -> None:
    lane = Lane[int](4)
    lane.send_nowait(1)
    lane.send_nowait(2)
    lane.close()
    lane.close()  # idempotent
    with pytest.raises(anyio.ClosedResourceError):
        lane.send_nowait(3)
    with pytest.raises(anyio.ClosedResourceError):
        await lane.send(3)
    assert [item async for item in lane] == [1, 2]
    with pytest.raises(anyio.EndOfStream):
        lane.receive_nowait()
    with pytest.raises(anyio.EndOfStream):
        await lane.receive()


async def test_close_wakes_a_waiting_receiver_with_end_of_stream() -> None:
    lane = Lane[int](1)
    ended: list[bool] = []

    async def receive() -> None:
        try:
            await lane.receive()
        except anyio.EndOfStream:
            ended.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(receive)
        await anyio.wait_all_tasks_blocked()
        lane.close()
    assert ended == [True]


async def test_close_receiving_drops_the_queue_and_fails_senders() -> None:
    lane = Lane[int](1)
    lane.send_nowait(1)
    failed: list[type[BaseException]] = []

    async def send() -> None:
        try:
            await lane.send(2)
        except anyio.BrokenResourceError as exc:
            failed.append(type(exc))

    async with anyio.create_task_group() as tg:
        tg.start_soon(send)
        await anyio.wait_all_tasks_blocked()
        lane.close_receiving()
    assert failed == [anyio.BrokenResourceError]
    assert len(lane) == 0
    with pytest.raises(anyio.BrokenResourceError):
        lane.send_nowait(3)
    with pytest.raises(anyio.ClosedResourceError):
        lane.receive_nowait()
    assert [item async for item in lane] == []


async def test_a_cancelled_receive_loses_nothing() -> None:
    lane = Lane[int](4)
    got: list[int] = []
    first = anyio.CancelScope()

    async def receive(scope: anyio.CancelScope) -> None:
        with scope:
            got.append(await lane.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(receive, first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(receive, anyio.CancelScope())
        await anyio.wait_all_tasks_blocked()
        # The item wakes the first receiver, whose receive is then cancelled: it either
        # takes the item anyway or passes its wake-up on to the second. Never both, never
        # neither.
        lane.send_nowait(7)
        first.cancel()
        await anyio.wait_all_tasks_blocked()
        lane.send_nowait(8)  # for whichever receiver still waits
    assert got[0] == 7
    assert len(got) + len(lane) == 2


async def test_a_receive_cancelled_while_waiting_leaves_the_queue_of_receivers() -> None:
    lane = Lane[int](4)
    with anyio.move_on_after(0.01):
        await lane.receive()
    lane.send_nowait(1)  # wakes nobody stale: the next receive takes it at once
    assert await lane.receive() == 1


async def test_a_cancelled_send_queues_nothing() -> None:
    lane = Lane[int](1)
    lane.send_nowait(1)
    with anyio.move_on_after(0.01):
        await lane.send(2)
    assert lane.receive_nowait() == 1
    with pytest.raises(anyio.WouldBlock):
        lane.receive_nowait()


async def test_a_busy_consumer_still_yields_to_other_tasks() -> None:
    lane = Lane[int](1000)
    for i in range(1000):
        lane.send_nowait(i)
    ran = False

    async def other() -> None:
        nonlocal ran
        ran = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        for _ in range(1000):
            await lane.receive()  # always finds an item, yet yields now and then
        assert ran


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")
def test_a_lane_needs_room() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Lane[int](0)


async def test_the_byte_bound_holds_like_the_count_bound() -> None:
    # Issue 17, item 10: a stream's queues are bounded in bytes too.
    lane = Lane[bytes](100, max_bytes=10, size=len)
    lane.send_nowait(b"aaaa")
    lane.send_nowait(b"bbbb")
    with pytest.raises(anyio.WouldBlock):
        lane.send_nowait(b"ccc")  # 11 > 10
    lane.send_nowait(b"")  # a marker of size 0 is never held back by bytes
    assert lane.queued_bytes == 8
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lane.send, b"ccc")
            await anyio.wait_all_tasks_blocked()
            assert len(lane) == 3
            assert await lane.receive() == b"aaaa"  # frees 4 bytes: the sender goes in
        assert [lane.receive_nowait() for _ in range(3)] == [b"bbbb", b"", b"ccc"]
    assert lane.queued_bytes == 0
    lane.send_nowait(b"x" * 50)  # larger than the bound: into an empty lane only
    with pytest.raises(anyio.WouldBlock):
        lane.send_nowait(b"y")
    lane.close_receiving()
    assert lane.queued_bytes == 0


async def test_fits_says_what_send_nowait_would_do() -> None:
    # A publisher asks before it builds a frame it could not queue (issue 13 §5).
    lane = Lane[bytes](3, max_bytes=10, size=len)
    assert lane.fits(4)
    lane.send_nowait(b"aaaa")
    assert lane.fits(6)
    assert not lane.fits(7)  # 4 + 7 > 10
    assert lane.fits(0)  # a marker is never held back by bytes
    lane.send_nowait(b"bbbbbb")
    lane.send_nowait(b"")
    assert not lane.fits(0)  # no place left
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lane.send, b"c")
            await anyio.wait_all_tasks_blocked()
            assert not lane.fits(0)
            assert lane.receive_nowait() == b"aaaa"  # the waiting sender goes in
    assert [lane.receive_nowait() for _ in range(3)] == [b"bbbbbb", b"", b"c"]
    assert lane.fits(50)  # larger than the bound: into an empty lane
    lane.close()
    assert not lane.fits(1)
    counted = Lane[int](1)  # no byte bound: places only
    assert counted.fits(10**9)
    counted.close_receiving()
    assert not counted.fits(1)


async def test_send_sized_nowait_is_send_nowait_with_the_size_given() -> None:
    # The per-event paths pass the size they measured; the bounds hold the same.
    measured: list[bytes] = []

    def size(item: bytes) -> int:
        measured.append(item)
        return len(item)

    lane = Lane[bytes](3, max_bytes=10, size=size)
    lane.send_sized_nowait(b"aaaa", 4)
    lane.send_sized_nowait(b"bbbb", 4)
    with pytest.raises(anyio.WouldBlock):
        lane.send_sized_nowait(b"ccc", 3)  # 11 > 10
    lane.send_sized_nowait(b"", 0)
    with pytest.raises(anyio.WouldBlock):
        lane.send_sized_nowait(b"", 0)  # no place left
    assert measured == []  # the size function was not asked
    assert lane.queued_bytes == 8
    assert lane.receive_nowait() == b"aaaa"
    assert lane.queued_bytes == 4
    lane.close()
    with pytest.raises(anyio.ClosedResourceError):
        lane.send_sized_nowait(b"d", 1)
