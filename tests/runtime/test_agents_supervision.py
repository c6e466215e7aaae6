"""Supervision: what a failing handler (or ``on_start``) does to an agent under each policy."""

from __future__ import annotations

import anyio
import pytest

from loom.runtime import (
    AgentSpec,
    AgentStartFailed,
    AgentStatus,
    Context,
    Event,
    InvalidArgument,
    Strategy,
    SupervisionPolicy,
)

from ._agents_support import Handler, Seen, event, hosted, info_of, spec

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

STARTED = ["created", "starting", "running"]
RESTARTED = ["stopping", "starting", "running"]


def policy(strategy: Strategy = Strategy.RESTART, **kwargs: float) -> SupervisionPolicy:
    """A policy with short backoffs and no jitter (so delays are exact lower bounds)."""
    settings: dict[str, float] = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "jitter": 0}
    settings.update(kwargs)
    return SupervisionPolicy(
        strategy=strategy,
        max_restarts=int(settings.pop("max_restarts", 5)),
        poison_after=int(settings.pop("poison_after", 3)),
        **settings,
    )


class Instances:
    """Numbers each instance in ``on_start`` and records the calls and their times."""

    def __init__(self) -> None:
        self.count = 0
        self.started = Seen[int]()
        self.stopped = Seen[int]()
        self.start_times: list[float] = []
        self.stop_times: list[float] = []

    def spec(self, on_event: Handler, *, policy: SupervisionPolicy) -> AgentSpec:
        """Agent ``a`` on topic ``in``, its instances counted and timed here."""
        return spec(
            "a",
            on_event,
            topics=["in"],
            on_start=self.on_start,
            on_stop=self.on_stop,
            policy=policy,
        )

    async def on_start(self, ctx: Context) -> None:
        self.count += 1
        ctx.state["instance"] = self.count
        ctx.state["count"] = 0
        self.start_times.append(anyio.current_time())
        self.started.add(self.count)

    async def on_stop(self, ctx: Context) -> None:
        self.stop_times.append(anyio.current_time())
        self.stopped.add(ctx.state["instance"])

    def gaps(self) -> list[float]:
        """Time from each instance's on_stop to the next one's on_start: the backoff."""
        return [b - a for a, b in zip(self.stop_times, self.start_times[1:], strict=False)]


# ---------------------------------------------------------------------------------- resume


async def test_resume_dead_letters_the_event_and_keeps_instance_and_state() -> None:
    inst = Instances()
    seen = Seen[tuple[int, int, str]]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        ctx.state["count"] += 1
        if ev.payload == b"bad":
            raise ValueError("boom")
        seen.add((ctx.state["instance"], ctx.state["count"], ev.payload.decode()))

    async with hosted() as h:
        await h.rt.start(inst.spec(on_event, policy=policy(Strategy.RESUME)))
        bad = event("bad", trace="kept")
        for ev in (event("x"), bad, event("y")):
            await h.bus.publish("in", ev)
        await seen.wait_for(2)
        letter = await h.dead.wait("a", "handler_error")
        assert h.rt.status("a") is AgentStatus.RUNNING
        assert h.life.history("a") == STARTED
        assert info_of(h.rt, "a").restarts == 0
    assert seen.items == [(1, 1, "x"), (1, 3, "y")]  # same instance, state kept
    assert inst.started.items == [1]
    assert letter.id == bad.id
    assert letter.payload == b"bad"
    assert letter.metadata == {
        "trace": "kept",
        "dead_letter.reason": "handler_error",
        "dead_letter.error": "ValueError: boom",
        "dead_letter.topic": "in",
        "dead_letter.agent": "a",
        "dead_letter.attempts": "1",
    }


# ---------------------------------------------------------------------------------- restart


async def test_restart_starts_a_fresh_instance_and_retries_the_failed_event_there() -> None:
    inst = Instances()
    seen = Seen[tuple[int, int, str]]()
    failed = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        ctx.state["count"] += 1
        if ev.payload == b"flaky" and not failed.items:
            failed.add("flaky")
            raise RuntimeError("first try fails")
        seen.add((ctx.state["instance"], ctx.state["count"], ev.payload.decode()))

    async with hosted() as h:
        await h.rt.start(inst.spec(on_event, policy=policy()))
        for payload in ("x", "flaky", "y"):
            await h.bus.publish("in", event(payload))
        await seen.wait_for(3)
        running = await h.life.wait("a", AgentStatus.RUNNING)
        assert running.restarts == 0
        running = await h.life.wait("a", AgentStatus.RUNNING)
        assert running.restarts == 1
        assert h.life.history("a") == STARTED + RESTARTED
        assert info_of(h.rt, "a").restarts == 1
        assert h.dead.of("a") == []
    # The fresh instance starts from fresh state and handles the failed event first.
    assert seen.items == [(1, 1, "x"), (2, 1, "flaky"), (2, 2, "y")]
    assert inst.started.items == [1, 2]
    assert inst.stopped.items == [1, 2]  # the old one at the restart, the new one at shutdown


async def test_restart_backoff_doubles_up_to_backoff_max() -> None:
    inst = Instances()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        raise RuntimeError("always")

    async with hosted() as h:
        await h.rt.start(
            inst.spec(
                on_event,
                policy=policy(
                    backoff_initial_s=0.02, backoff_max_s=0.04, max_restarts=10, poison_after=100
                ),
            )
        )
        await h.bus.publish("in", event("bad"))
        await inst.started.wait_for(6)
        await h.rt.stop("a")
        assert (await h.dead.wait("a")).metadata["dead_letter.reason"] == "agent_stopped"
    gaps = inst.gaps()
    assert len(gaps) == 5
    for gap, least in zip(gaps, (0.02, 0.04, 0.04, 0.04, 0.04), strict=True):
        assert gap >= least
    # Uncapped, the fifth delay would be 0.32 s.
    assert gaps[4] < 0.2


async def test_a_handled_event_resets_the_backoff() -> None:
    inst = Instances()
    tried: set[str] = set()
    seen = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        name = ev.payload.decode()
        if name not in tried:
            tried.add(name)
            raise RuntimeError(f"{name} fails once")
        seen.add(name)

    async with hosted() as h:
        await h.rt.start(
            inst.spec(on_event, policy=policy(backoff_initial_s=0.05, backoff_max_s=1.0))
        )
        for name in ("e1", "e2", "e3"):
            await h.bus.publish("in", event(name))
        await seen.wait_for(3)
        assert info_of(h.rt, "a").restarts == 3
    assert seen.items == ["e1", "e2", "e3"]
    gaps = inst.gaps()[:3]
    assert all(gap >= 0.05 for gap in gaps)
    # Had the delay kept doubling, the third would have been 0.2 s.
    assert gaps[2] < 0.15


async def test_backoff_jitter_stays_within_its_fraction_and_the_cap() -> None:
    p = SupervisionPolicy(backoff_initial_s=0.1, backoff_max_s=2.0, jitter=0.5)
    for consecutive in range(1, 12):
        base = min(2.0, 0.1 * 2 ** (consecutive - 1))
        draws = {p.backoff(consecutive) for _ in range(200)}
        assert all(base * 0.5 <= d <= base <= 2.0 for d in draws)
        assert len(draws) > 1  # jittered, not fixed
    exact = SupervisionPolicy(backoff_initial_s=0.1, backoff_max_s=0.3, jitter=0)
    assert [exact.backoff(k) for k in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]


async def test_too_many_restarts_fail_the_agent_and_dead_letter_its_mailbox() -> None:
    inst = Instances()
    attempts = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        attempts.add(ev.payload.decode())
        if ev.payload == b"bad":
            raise ValueError("boom")

    async with hosted() as h:
        await h.rt.start(inst.spec(on_event, policy=policy(max_restarts=2, poison_after=10)))
        for payload in ("bad", "x1", "x2"):
            await h.bus.publish("in", event(payload))
        failed = await h.life.wait("a", AgentStatus.FAILED)
        assert h.rt.status("a") is AgentStatus.FAILED
        assert info_of(h.rt, "a").restarts == 2
        assert h.life.history("a") == STARTED + RESTARTED * 2 + ["stopping", "failed"]
        letters = [await h.dead.wait("a") for _ in range(3)]
    assert "ValueError: boom" in failed.reason
    assert "gave up after 2 restarts" in failed.reason
    assert failed.restarts == 2
    assert attempts.items == ["bad", "bad", "bad"]
    assert [e.payload for e in letters] == [b"bad", b"x1", b"x2"]
    assert {e.metadata["dead_letter.reason"] for e in letters} == {"agent_failed"}
    assert inst.started.items == inst.stopped.items == [1, 2, 3]


async def test_restarts_are_counted_in_a_sliding_window() -> None:
    failing = Seen[str]()
    seen = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        name = ev.payload.decode()
        if name.startswith("bad") and name not in failing.items:
            failing.add(name)
            raise RuntimeError(name)
        seen.add(name)

    async with hosted() as h:
        await h.rt.start(
            spec("a", on_event, topics=["in"], policy=policy(max_restarts=1, window_s=0.1))
        )
        await h.bus.publish("in", event("bad1"))
        await seen.wait_for(1)
        await anyio.sleep(0.15)  # let the first restart leave the window
        await h.bus.publish("in", event("bad2"))
        await seen.wait_for(2)
        assert h.rt.status("a") is AgentStatus.RUNNING
        assert info_of(h.rt, "a").restarts == 2
        # A third failure within the window of the second is one restart too many.
        await h.bus.publish("in", event("bad3"))
        await h.life.wait("a", AgentStatus.FAILED)
    assert seen.items == ["bad1", "bad2"]


async def test_restart_with_concurrent_workers_lets_the_others_finish_first() -> None:
    inst = Instances()
    release = anyio.Event()
    failed = Seen[str]()
    done = Seen[tuple[int, str]]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        name = ev.payload.decode()
        if name == "slow":
            await release.wait()
        elif name == "bad" and not failed.items:
            failed.add(name)
            raise RuntimeError("bad")
        done.add((ctx.state["instance"], name))

    async with hosted() as h:
        await h.rt.start(
            spec(
                "a",
                on_event,
                topics=["in"],
                max_concurrency=2,
                on_start=inst.on_start,
                on_stop=inst.on_stop,
                policy=policy(),
            )
        )
        await h.bus.publish("in", event("slow"))
        await h.bus.publish("in", event("bad"))
        await failed.wait_for(1)
        await anyio.wait_all_tasks_blocked()
        assert inst.stopped.items == []  # the slow handler still runs in the old instance
        release.set()
        await done.wait_for(2)
    assert done.items == [(1, "slow"), (2, "bad")]


async def test_stop_cuts_a_restart_backoff_short() -> None:
    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        raise RuntimeError("fails")

    async with hosted() as h:
        slow = policy(backoff_initial_s=60, backoff_max_s=60)
        await h.rt.start(spec("a", on_event, topics=["in"], policy=slow))
        await h.bus.publish("in", event("e"))
        await h.life.wait("a", AgentStatus.STOPPING)  # the instance ended; the backoff runs
        with anyio.fail_after(2):
            await h.rt.stop("a")
        assert h.rt.status("a") is AgentStatus.STOPPED
        letter = await h.dead.wait("a")
        assert letter.payload == b"e"
        assert letter.metadata["dead_letter.reason"] == "agent_stopped"


# ---------------------------------------------------------------------------------- stop


async def test_stop_strategy_stops_the_agent_and_dead_letters_the_event() -> None:
    inst = Instances()
    seen = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        if ev.payload == b"bad":
            raise ValueError("boom")
        seen.add(ev.payload.decode())

    async with hosted() as h:
        await h.rt.start(inst.spec(on_event, policy=policy(Strategy.STOP)))
        for payload in ("x", "bad", "y", "z"):
            await h.bus.publish("in", event(payload))
        stopped = await h.life.wait("a", AgentStatus.STOPPED)
        assert h.rt.status("a") is AgentStatus.STOPPED
        assert h.life.history("a") == [*STARTED, "stopping", "stopped"]
        letters = [await h.dead.wait("a") for _ in range(3)]
    assert "ValueError: boom" in stopped.reason
    assert seen.items == ["x"]
    assert inst.stopped.items == [1]
    assert [(e.payload, e.metadata["dead_letter.reason"]) for e in letters] == [
        (b"bad", "handler_error"),
        (b"y", "agent_stopped"),
        (b"z", "agent_stopped"),
    ]


# ---------------------------------------------------------------------------------- poison


async def test_a_poison_event_is_dead_lettered_after_poison_after_failures() -> None:
    attempts = Seen[str]()
    seen = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        if ev.payload == b"poison":
            attempts.add("poison")
            raise ValueError("poisoned")
        seen.add(ev.payload.decode())

    async with hosted() as h:
        await h.rt.start(
            spec("a", on_event, topics=["in"], policy=policy(poison_after=3, max_restarts=5))
        )
        await h.bus.publish("in", event("poison"))
        await h.bus.publish("in", event("after"))
        letter = await h.dead.wait("a", "poison")
        await seen.wait_for(1)
        await h.bus.publish("in", event("later"))
        await seen.wait_for(2)
        assert h.rt.status("a") is AgentStatus.RUNNING
        # Every failure restarts, the third one included (after dead-lettering the event).
        assert info_of(h.rt, "a").restarts == 3
        assert len(h.dead.of("a")) == 1
    assert attempts.items == ["poison"] * 3  # never handled again
    assert seen.items == ["after", "later"]
    assert letter.payload == b"poison"
    assert letter.metadata["dead_letter.error"] == "ValueError: poisoned"
    assert letter.metadata["dead_letter.attempts"] == "3"


async def test_poison_after_one_never_retries() -> None:
    attempts = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        attempts.add(ev.payload.decode())
        raise ValueError("no")

    async with hosted() as h:
        await h.rt.start(spec("a", on_event, topics=["in"], policy=policy(poison_after=1)))
        await h.bus.publish("in", event("p"))
        letter = await h.dead.wait("a", "poison")
        await h.life.wait("a", AgentStatus.RUNNING)
        await h.life.wait("a", AgentStatus.RUNNING)  # the restart after it
    assert attempts.items == ["p"]
    assert letter.metadata["dead_letter.attempts"] == "1"


async def test_resume_never_retries_a_failed_event() -> None:
    attempts = Seen[str]()

    async def on_event(ctx: Context, topic: str, ev: Event) -> None:
        attempts.add(ev.payload.decode())
        if ev.payload == b"bad":
            raise ValueError("no")

    async with hosted() as h:
        await h.rt.start(
            spec("a", on_event, topics=["in"], policy=policy(Strategy.RESUME, poison_after=5))
        )
        await h.bus.publish("in", event("bad"))
        await h.bus.publish("in", event("next"))
        await attempts.wait_for(2)
        await h.dead.wait("a", "handler_error")
    assert attempts.items == ["bad", "next"]


# ---------------------------------------------------------------------------------- on_start


async def test_a_failing_on_start_is_retried_with_backoff_under_restart() -> None:
    inst = Instances()
    calls = Seen[int]()

    async def on_start(ctx: Context) -> None:
        await inst.on_start(ctx)
        calls.add(inst.count)
        if inst.count < 3:
            raise RuntimeError(f"not yet ({inst.count})")

    async with hosted() as h:
        await h.rt.start(
            spec(
                "a",
                on_start=on_start,
                on_stop=inst.on_stop,
                policy=policy(backoff_initial_s=0.02, backoff_max_s=1.0),
            )
        )
        # start() returned: the third on_start succeeded.
        assert calls.items == [1, 2, 3]
        assert h.rt.status("a") is AgentStatus.RUNNING
        assert info_of(h.rt, "a").restarts == 2
        assert h.life.history("a") == ["created", "starting"] + ["stopping", "starting"] * 2 + [
            "running"
        ]
    gaps = inst.gaps()
    assert gaps[0] >= 0.02
    assert gaps[1] >= 0.04


async def test_an_on_start_that_keeps_failing_under_restart_raises_agent_start_failed() -> None:
    calls = Seen[int]()

    async def on_start(ctx: Context) -> None:
        calls.add(len(calls))
        raise RuntimeError("never")

    async with hosted() as h:
        baseline = h.bus.subscription_count()
        with pytest.raises(AgentStartFailed) as info:
            await h.rt.start(spec("a", on_start=on_start, policy=policy(max_restarts=2)))
        assert info.value.agent_id == "a"
        assert h.rt.status("a") is AgentStatus.FAILED
        failed = await h.life.wait("a", AgentStatus.FAILED)
        assert "on_start raised RuntimeError: never" in failed.reason
        assert h.bus.subscription_count() == baseline
    assert len(calls) == 3


@pytest.mark.parametrize("strategy", [Strategy.RESUME, Strategy.STOP])
async def test_a_failing_on_start_under_resume_or_stop_raises_agent_start_failed(
    strategy: Strategy,
) -> None:
    calls = Seen[int]()

    async def on_start(ctx: Context) -> None:
        calls.add(len(calls))
        raise RuntimeError("no")

    async with hosted() as h:
        with pytest.raises(AgentStartFailed) as info:
            await h.rt.start(spec("a", on_start=on_start, policy=policy(strategy)))
        assert info.value.agent_id == "a"
        assert h.rt.status("a") is AgentStatus.STOPPED
        stopped = await h.life.wait("a", AgentStatus.STOPPED)
        assert "on_start raised RuntimeError: no" in stopped.reason
        assert h.life.history("a") == ["created", "starting", "stopping", "stopped"]
    assert len(calls) == 1


async def test_agent_start_failed_names_the_on_start_error() -> None:
    async def on_start(ctx: Context) -> None:
        raise RuntimeError("database unreachable")

    async with hosted() as h:
        with pytest.raises(AgentStartFailed, match="database unreachable"):
            await h.rt.start(spec("a", on_start=on_start, policy=policy(Strategy.STOP)))


async def test_policy_arguments_are_checked() -> None:
    for kwargs in (
        {"window_s": 0},
        {"backoff_initial_s": -1},
        {"backoff_initial_s": 2, "backoff_max_s": 1},
        {"jitter": 1.5},
        {"poison_after": 0},
        {"max_restarts": -1},
    ):
        with pytest.raises(InvalidArgument):
            SupervisionPolicy(**kwargs)
