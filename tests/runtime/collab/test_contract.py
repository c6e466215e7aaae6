"""Contract-net: awards by score (ties by arrival), rejects, refused scores, declines, the
window and its early close, late bids, and the bidder's side."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from loom.runtime import Envelope, Event, EventBus, InvalidArgument
from loom.runtime.collab import (
    AWARD,
    CFP,
    PROPOSE,
    REJECT,
    Decision,
    ProposalOutcome,
    contract_net,
    decline,
    metadata_score,
    propose,
    reply,
)
from tests.runtime._collab_support import idle

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"]),
]

Bidder = Callable[[Event], Awaitable[None]]


@asynccontextmanager
async def bidders(bus: EventBus, topic: str, bids: list[Bidder]) -> AsyncIterator[None]:
    """One subscription per bidder on ``topic``, each answering every CFP with its function."""
    async with anyio.create_task_group() as tg:
        for bid in bids:
            sub = bus.subscribe(topic)

            async def loop(sub: object = sub, bid: Bidder = bid) -> None:
                async with sub:  # type: ignore[attr-defined]
                    async for d in sub:  # type: ignore[attr-defined]
                        await bid(d.event)

            tg.start_soon(loop)
        yield
        tg.cancel_scope.cancel()


async def test_best_bids_win_and_everyone_hears() -> None:
    outcomes: dict[str, ProposalOutcome] = {}
    all_heard = anyio.Event()

    def bidder(name: str, score: float) -> Bidder:
        async def bid(cfp: Event) -> None:
            assert cfp.type == CFP
            outcomes[name] = await propose(
                bus, cfp, sender=name, score=score, payload=name.encode(), timeout=5
            )
            if len(outcomes) == 4:
                all_heard.set()

        return bid

    async with EventBus() as bus:
        scores = {"a": 1.0, "b": 5.0, "c": 3.0, "d": 5.0}
        async with bidders(bus, "jobs.render", [bidder(n, s) for n, s in scores.items()]):
            with anyio.fail_after(2):
                result = await contract_net(
                    bus, "jobs.render", b"task", window=60, max_awards=2, expected=4, sender="boss"
                )
            assert not result.timed_out
            assert not result.unrouted
            assert len(result.proposals) == 4
            # Best first; of the tied 5.0s the earlier arrival first.
            tied = [p.sender for p in result.proposals if p.score == 5.0]
            assert [p.sender for p in result.awarded] == tied
            assert {p.sender for p in result.rejected} == {"a", "c"}
            assert result.answered == 4
            with anyio.fail_after(2):
                await all_heard.wait()
        assert outcomes["b"].awarded
        assert outcomes["d"].awarded
        assert outcomes["b"].event is not None
        assert outcomes["b"].event.type == AWARD
        assert outcomes["a"].decision is Decision.REJECTED
        assert outcomes["a"].reason == "outbid"
        assert outcomes["c"].event is not None
        assert outcomes["c"].event.type == REJECT
        assert outcomes["a"].proposal.type == PROPOSE
    assert idle(bus) == (0, 1)


async def test_bad_scores_are_refused_not_fatal() -> None:
    async def raw(score: str | None, sender: str) -> Bidder:
        async def bid(cfp: Event) -> None:
            meta = {} if score is None else {"score": score}
            await reply(bus, cfp, Event(type=PROPOSE, metadata=meta), sender=sender)

        return bid

    async with EventBus() as bus:
        bids = [
            await raw("abc", "x"),
            await raw("nan", "y"),
            await raw(None, "z"),
            await raw("inf", "w"),
            await raw("2.5", "ok"),
        ]
        async with bus.subscribe("agent.>") as mailboxes, bidders(bus, "jobs.x", bids):
            result = await contract_net(bus, "jobs.x", window=60, expected=5, sender="boss")
            reasons = {r.sender: r.reason for r in result.refused}
            assert reasons == {
                "x": "score 'abc' is not a number",
                "y": "score is NaN",
                "z": "the proposal has no 'score' in its metadata",
                "w": "score is not finite",
            }
            assert [p.sender for p in result.awarded] == ["ok"]
            # Everyone who bid is answered: the refused get a reject with the reason.
            answers: dict[str, Event] = {}
            while len(answers) < 5:
                d = await mailboxes.receive()
                if d.event.type in (AWARD, REJECT):
                    answers[d.topic.split(".")[1]] = d.event
            assert answers["ok"].type == AWARD
            assert answers["y"].metadata["reason"] == "score is NaN"
    assert idle(bus) == (0, 1)


async def test_custom_score_function() -> None:
    def by_length(ev: Event) -> float:
        if ev.payload == b"boom":
            raise RuntimeError("bad bid")
        return float(len(ev.payload))

    def bidder(name: str, payload: bytes) -> Bidder:
        async def bid(cfp: Event) -> None:
            await propose(bus, cfp, sender=name, score=0, payload=payload, timeout=5)

        return bid

    async with EventBus() as bus:
        bids = [bidder("short", b"ab"), bidder("long", b"abcdef"), bidder("bad", b"boom")]
        async with bidders(bus, "jobs.y", bids):
            result = await contract_net(bus, "jobs.y", window=60, expected=3, score=by_length)
        assert [p.sender for p in result.awarded] == ["long"]
        assert result.awarded[0].score == 6.0
        assert result.refused[0].reason == "the score function raised RuntimeError('bad bid')"


async def test_window_closes_and_late_bids_are_late() -> None:
    cfps: list[Event] = []

    async def hold(cfp: Event) -> None:
        cfps.append(cfp)

    async def quick(cfp: Event) -> None:
        await propose(bus, cfp, sender="quick", score=1, timeout=5)

    async def shy(cfp: Event) -> None:
        await decline(bus, cfp, sender="shy", reason="busy")

    async with EventBus() as bus:
        async with bidders(bus, "jobs.z", [hold, quick, shy]):
            result = await contract_net(bus, "jobs.z", window=0.05)
            assert result.timed_out
            assert [p.sender for p in result.awarded] == ["quick"]
            assert result.declined == ("shy",)
            late = await propose(bus, cfps[0], sender="late", score=9, timeout=5)
        assert late.decision is Decision.LATE
        assert not late.awarded
    assert idle(bus) == (0, 1)


async def test_duplicate_bids_and_foreign_events() -> None:
    async def twice(cfp: Event) -> None:
        await bus.publish(cfp.envelope.reply_to, Event(envelope=Envelope(correlation_id="other")))
        await reply(bus, cfp, Event(type="chatter"), sender="t")
        for score in ("1", "2"):
            await reply(bus, cfp, Event(type=PROPOSE, metadata={"score": score}), sender="t")

    async with EventBus() as bus:
        async with bidders(bus, "jobs.d", [twice]):
            result = await contract_net(bus, "jobs.d", window=60, expected=2)
        assert [p.score for p in result.proposals] == [1.0]
        assert [r.reason for r in result.refused] == ["duplicate bid"]
        assert result.ignored == 2


async def test_no_bidders_and_bidder_timeout() -> None:
    async with EventBus() as bus:
        with anyio.fail_after(2):
            result = await contract_net(bus, "jobs.none", window=60)
        assert result.unrouted
        assert not result.timed_out
        assert result.answered == 0
        # A CFP nobody decides on: the bidder's own timeout ends its wait.
        async with bus.subscribe("jobs.manual") as manual:
            cfp = Event(type=CFP, envelope=Envelope(reply_to="mgr.inbox", correlation_id="c"))
            async with bus.subscribe("mgr.inbox"):
                out = await propose(bus, cfp, sender="b", score=1, timeout=0.02)
            assert out.decision is Decision.TIMED_OUT
            assert manual.statistics().queued == 0
    assert idle(bus) == (0, 1)


async def test_cancellation_leaves_nothing() -> None:
    async def hold(cfp: Event) -> None:
        pass

    async with EventBus() as bus, bidders(bus, "jobs.c", [hold]):
        with anyio.move_on_after(0.01) as scope:
            await contract_net(bus, "jobs.c", window=60)
        assert scope.cancelled_caught
        assert idle(bus) == (1, 3)


async def test_bad_arguments() -> None:
    cfp = Event(envelope=Envelope(reply_to="x.y", correlation_id="c"))
    async with EventBus() as bus:
        cases: list[tuple[Callable[[], Awaitable[object]], str]] = [
            (lambda: contract_net(bus, "j.x", window=0), "window"),
            (lambda: contract_net(bus, "j.x", window=1, max_awards=0), "max_awards"),
            (lambda: contract_net(bus, "j.x", window=1, expected=0), "expected"),
            (lambda: contract_net(bus, "j.x", window=1, sender="a.b"), "sender"),
            (lambda: propose(bus, cfp, sender="s", score=math.nan, timeout=1), "finite"),
            (lambda: propose(bus, cfp, sender="s", score=True, timeout=1), "finite"),
            (lambda: propose(bus, Event(), sender="s", score=1, timeout=1), "nowhere"),
            (lambda: propose(bus, "cfp", sender="s", score=1, timeout=1), "must be an Event"),  # type: ignore[arg-type]
            (lambda: decline(bus, Event(), sender="s"), "nowhere"),
        ]
        for call, message in cases:
            with pytest.raises(InvalidArgument, match=message):
                await call()
        assert idle(bus) == (0, 1)
    with pytest.raises(ValueError, match="not a number"):
        metadata_score(Event(metadata={"score": "x"}))
