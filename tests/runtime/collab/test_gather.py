"""Fan-out/fan-in: All, FirstK, Quorum, reducers, deadlines, broadcast, early finish."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
import pytest

from loom.runtime import Envelope, Event, EventBus, InvalidArgument
from loom.runtime.collab import All, FirstK, Quorum, gather, reply
from tests.runtime._collab_support import idle

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]

Handler = Callable[[Event], Awaitable[None]]


@asynccontextmanager
async def serving(bus: EventBus, handlers: dict[str, Handler]) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        for topic, handler in handlers.items():
            sub = bus.subscribe(topic)

            async def loop(sub: object = sub, handler: Handler = handler) -> None:
                assert not isinstance(sub, str)
                async with sub:  # type: ignore[attr-defined]
                    async for delivery in sub:  # type: ignore[attr-defined]
                        await handler(delivery.event)

            tg.start_soon(loop)
        yield
        tg.cancel_scope.cancel()


def answer(bus: EventBus, name: str, payload: bytes | None = None) -> Handler:
    async def handler(ev: Event) -> None:
        await reply(bus, ev, name.encode() if payload is None else payload, sender=name)

    return handler


async def mute(ev: Event) -> None:
    pass


def joined(events: Sequence[Event]) -> bytes:
    return b"+".join(sorted(e.payload for e in events))


async def test_all_with_a_reducer() -> None:
    async with EventBus() as bus:
        handlers = {f"w.{n}": answer(bus, n) for n in ("a", "b", "c")}
        async with serving(bus, handlers):
            result = await gather(bus, list(handlers), b"q", timeout=5, reducer=joined)
        assert result.satisfied
        assert not result.timed_out
        assert result.value == b"a+b+c"
        assert {(r.target, r.sender) for r in result.replies} == {
            ("w.a", "a"),
            ("w.b", "b"),
            ("w.c", "c"),
        }
        assert result.missing == result.unrouted == ()
        assert (result.expected, result.required, result.ignored) == (3, 3, 0)
        assert [e.payload for e in result.events] == [r.event.payload for r in result.replies]
    assert idle(bus) == (0, 1)


async def test_all_times_out_naming_the_missing() -> None:
    async with EventBus() as bus:
        handlers = {"w.a": answer(bus, "a"), "w.slow": mute, "w.b": answer(bus, "b")}
        async with serving(bus, handlers):
            result = await gather(bus, list(handlers), timeout=0.05, reducer=len)
        assert result.timed_out
        assert not result.satisfied
        assert result.missing == ("w.slow",)
        assert sorted(r.target for r in result.replies) == ["w.a", "w.b"]
        assert result.value == 2  # the reducer sees what arrived
    assert idle(bus) == (0, 1)


async def test_first_k_returns_early() -> None:
    async with EventBus() as bus:
        handlers = {"w.a": answer(bus, "a"), "w.b": answer(bus, "b"), "w.slow": mute}
        async with serving(bus, handlers):
            with anyio.fail_after(2):
                result = await gather(bus, list(handlers), mode=FirstK(2), timeout=60)
        assert result.satisfied
        assert not result.timed_out
        assert len(result.replies) == 2
        assert result.missing == ("w.slow",)
        assert result.value is None
    assert idle(bus) == (0, 1)


@pytest.mark.parametrize(
    ("mode", "required"),
    [(Quorum(2), 2), (Quorum(0.5), 3), (Quorum(0.1), 1), (Quorum(1.0), 5), (Quorum(0.6), 3)],
)
async def test_quorum(mode: Quorum, required: int) -> None:
    async with EventBus() as bus:
        names = ["a", "b", "c", "d", "e"]
        handlers = {f"w.{n}": answer(bus, n) for n in names}
        async with serving(bus, handlers):
            with anyio.fail_after(2):
                result = await gather(bus, list(handlers), mode=mode, timeout=60)
        assert result.required == required
        assert result.satisfied
        assert len(result.replies) == required
        assert len(result.missing) == 5 - required
    assert idle(bus) == (0, 1)


async def test_unrouted_targets_are_missing_at_once() -> None:
    async with EventBus() as bus, serving(bus, {"w.a": answer(bus, "a")}):
        with anyio.fail_after(2):
            # Nobody serves w.x or w.y: the mode cannot be met, so no waiting for 60 s.
            result = await gather(bus, ["w.a", "w.x", "w.y"], mode=Quorum(2), timeout=60)
        assert not result.satisfied
        assert not result.timed_out
        assert result.unrouted == ("w.x", "w.y")
        # It did not wait for w.a either: its reply, if any, comes after the call.
        assert result.missing == ("w.a", "w.x", "w.y")
        # Still satisfiable without them: it waits for the routed ones only.
        result = await gather(bus, ["w.x", "w.a"], mode=FirstK(1), timeout=60)
        assert result.satisfied
        assert result.unrouted == ("w.x",)
    assert idle(bus) == (0, 1)


async def test_broadcast_with_expected() -> None:
    async with EventBus() as bus:
        async with anyio.create_task_group() as tg:
            for name in ("a", "b", "c"):
                sub = bus.subscribe("team.all")

                async def worker(sub: object = sub, name: str = name) -> None:
                    async with sub:  # type: ignore[attr-defined]
                        async for d in sub:  # type: ignore[attr-defined]
                            await reply(bus, d.event, name.encode(), sender=name)
                            # A second reply from the same sender is ignored.
                            await reply(bus, d.event, b"again", sender=name)

                tg.start_soon(worker)
            result = await gather(bus, "team.all", expected=3, timeout=5, reducer=joined)
            assert result.satisfied
            assert result.value == b"a+b+c"
            assert {r.sender for r in result.replies} == {"a", "b", "c"}
            assert {r.target for r in result.replies} == {"team.all"}

            # Expecting more than answer: the missing are counted under the broadcast topic.
            short = await gather(bus, "team.all", expected=5, timeout=0.05)
            assert short.timed_out
            assert not short.satisfied
            assert short.missing == ("team.all", "team.all")
            assert short.ignored >= 3  # the "again" replies
            tg.cancel_scope.cancel()

        with anyio.fail_after(2):
            nobody = await gather(bus, "team.none", expected=2, timeout=60)
        assert nobody.unrouted == ("team.none",)
        assert not nobody.satisfied
    assert idle(bus) == (0, 1)


async def test_duplicate_and_foreign_replies_are_ignored() -> None:
    async def chatty(ev: Event) -> None:
        await bus.publish(ev.envelope.reply_to, Event(envelope=Envelope(correlation_id="x")))
        await reply(bus, ev, b"1", sender="chatty")
        await reply(bus, ev, b"2", sender="chatty")

    async with EventBus() as bus:
        async with serving(bus, {"w.chatty": chatty, "w.mute": mute}):
            result = await gather(bus, ["w.chatty", "w.mute"], timeout=0.05)
        assert [r.event.payload for r in result.replies] == [b"1"]
        assert result.ignored == 2
    assert idle(bus) == (0, 1)


async def test_a_full_target_does_not_hold_back_the_others() -> None:
    async with EventBus() as bus, bus.subscribe("w.full", buffer_size=1) as full:
        await bus.publish("w.full", Event())
        async with serving(bus, {"w.a": answer(bus, "a")}):
            with anyio.fail_after(2):
                result = await gather(bus, ["w.full", "w.a"], mode=FirstK(1), timeout=60)
        assert result.satisfied
        assert result.replies[0].target == "w.a"
        assert full.statistics().waiting_publishers == 0
    assert idle(bus) == (0, 1)


async def test_cancellation_leaves_nothing() -> None:
    async with EventBus() as bus, serving(bus, {"w.mute": mute}):
        with anyio.move_on_after(0.01) as scope:
            await gather(bus, ["w.mute"], timeout=60)
        assert scope.cancelled_caught
        assert idle(bus) == (1, 3)


async def test_bad_arguments() -> None:
    async with EventBus() as bus:
        bad: list[tuple[Callable[[], Awaitable[object]], str]] = [
            (lambda: gather(bus, [], timeout=1), "at least one target"),
            (lambda: gather(bus, "t.x", timeout=1), "broadcast needs expected"),
            (lambda: gather(bus, "t.x", expected=0, timeout=1), "broadcast needs expected"),
            (lambda: gather(bus, ["t.x"], expected=2, timeout=1), "disagrees"),
            (lambda: gather(bus, ["t.x"], mode=FirstK(2), timeout=1), "never be met"),
            (lambda: gather(bus, ["t.x"], mode=Quorum(3), timeout=1), "never be met"),
            (lambda: gather(bus, ["t.x"], mode="all", timeout=1), "mode"),  # type: ignore[call-overload]
            (lambda: gather(bus, ["t.x"], timeout=0), "timeout"),
        ]
        for call, message in bad:
            with pytest.raises(InvalidArgument, match=message):
                await call()
        assert idle(bus) == (0, 1)
    modes: list[tuple[Callable[[], object], str]] = [
        (lambda: FirstK(0), "k >= 1"),
        (lambda: Quorum(0), ">= 1"),
        (lambda: Quorum(1.5), r"\(0, 1\]"),
        (lambda: Quorum(0.0), r"\(0, 1\]"),
        (lambda: Quorum(True), "int or a float"),
    ]
    for make, message in modes:
        with pytest.raises(InvalidArgument, match=message):
            make()
    assert All().required(4) == 4
