"""The reconnect state machine: backoff, status changes, and a real server restarted on the same
port under a connected client (re-register once, resubscribe, no duplicates)."""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import pytest

from loom.bridge._reconnect import Backoff, ConnectionStatus, Reconnector
from loom.runtime import Event, InvalidArgument

from ._client_support import client, hosting, next_of

pytestmark = pytest.mark.anyio

C = ConnectionStatus


# ------------------------------------------------------------------ backoff


def test_backoff_grows_to_its_cap_and_jitters_below_it() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.5)
    rng = random.Random(7)
    for failures, base in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (50, 1.0)]:
        delays = [backoff.delay(failures, rng=rng) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base * 0.3  # really jittered
    # A huge failure count neither overflows nor exceeds the cap.
    assert backoff.delay(10**6, rng=rng) <= 1.0


def test_backoff_without_jitter_is_exact() -> None:
    backoff = Backoff(initial=0.5, maximum=3.0, multiplier=3.0, jitter=0.0)
    assert [backoff.delay(n) for n in (1, 2, 3)] == [0.5, 1.5, 3.0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0.0},
        {"initial": 2.0, "maximum": 1.0},
        {"multiplier": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_backoff_refuses_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument):
        Backoff(**kwargs)


# ------------------------------------------------------------------ the state machine


def _recorder(rc: Reconnector) -> list[tuple[ConnectionStatus, ConnectionStatus]]:
    seen: list[tuple[ConnectionStatus, ConnectionStatus]] = []
    rc.add_listener(lambda old, new: seen.append((old, new)))
    return seen


async def test_failures_back_off_then_a_connection_resets_the_count() -> None:
    rc = Reconnector(Backoff(initial=0.001, maximum=0.004), rng=random.Random(1))
    seen = _recorder(rc)
    calls = 0
    stay = anyio.Event()

    async def attempt(connected: Callable[[], None]) -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise ConnectionError(f"refused {calls}")
        connected()
        assert rc.statistics().failures == 0
        await stay.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: rc.run(attempt, fatal=lambda exc, ever: False))
        with anyio.fail_after(5):
            await rc.wait_status(C.CONNECTED)
        stats = rc.statistics()
        assert (stats.attempts, stats.connects, stats.failures) == (4, 1, 0)
        assert "refused 3" in stats.last_error
        rc.close()
        stay.set()
    assert seen == [
        (C.CONNECTING, C.RECONNECTING),
        (C.RECONNECTING, C.CONNECTED),
        (C.CONNECTED, C.CLOSED),
    ]
    assert rc.status is C.CLOSED


async def test_a_lost_connection_reconnects_with_the_first_short_delay() -> None:
    rc = Reconnector(Backoff(initial=0.001, maximum=10.0, jitter=0.0))
    seen = _recorder(rc)
    calls = 0

    async def attempt(connected: Callable[[], None]) -> None:
        nonlocal calls
        calls += 1
        connected()
        if calls < 3:
            return  # the connection ended by itself
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: rc.run(attempt, fatal=lambda exc, ever: False))
        with anyio.fail_after(5):
            while rc.statistics().connects < 3:
                await rc.wait_status(C.RECONNECTING)
                await rc.wait_status(C.CONNECTED)
        tg.cancel_scope.cancel()
    assert seen[:4] == [
        (C.CONNECTING, C.CONNECTED),
        (C.CONNECTED, C.RECONNECTING),
        (C.RECONNECTING, C.CONNECTED),
        (C.CONNECTED, C.RECONNECTING),
    ]
    assert rc.status is C.CLOSED  # cancellation closes it


async def test_a_fatal_error_closes_and_propagates() -> None:
    rc = Reconnector(Backoff(initial=0.001, maximum=0.001))

    async def attempt(connected: Callable[[], None]) -> None:
        raise PermissionError("bad token")

    with pytest.raises(PermissionError):
        await rc.run(attempt, fatal=lambda exc, ever: isinstance(exc, PermissionError))
    assert rc.status is C.CLOSED
    assert "bad token" in rc.statistics().last_error


async def test_close_cuts_a_backoff_sleep_short_and_run_is_single() -> None:
    rc = Reconnector(Backoff(initial=60.0, maximum=60.0))
    attempted = anyio.Event()

    async def attempt(connected: Callable[[], None]) -> None:
        attempted.set()
        raise ConnectionError("down")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: rc.run(attempt, fatal=lambda exc, ever: False))
            await attempted.wait()
            await rc.wait_status(C.RECONNECTING)
            with pytest.raises(RuntimeError, match="already running"):
                await rc.run(attempt, fatal=lambda exc, ever: False)
            rc.close()  # the 60 s sleep ends now
    assert rc.statistics().attempts == 1


def test_closed_is_final() -> None:
    rc = Reconnector()
    rc.close()
    rc.close()  # idempotent
    with pytest.raises(RuntimeError, match="invalid connection status change"):
        rc._set(C.CONNECTED)


# ------------------------------------------------------------------ a real restart


async def test_a_server_restart_on_the_same_port_reconnects_once_and_resubscribes() -> None:
    async with hosting() as host:
        bus = host.bus
        agent = client(host, "r1", topics=("input.*",))
        seen: list[tuple[ConnectionStatus, ConnectionStatus]] = []
        agent.add_listener(lambda old, new: seen.append((old, new)))
        async with bus.subscribe("loom.lifecycle.r1") as life, agent:
            assert await agent.subscribe("extra.*")
            assert not await agent.subscribe("extra.*")  # held already: nothing asked
            await next_of(life, "agent.running")

            await host.stop()
            with anyio.fail_after(5):
                await agent._reconnector.wait_status(C.RECONNECTING)
            await host.start()
            with anyio.fail_after(5):
                await agent.wait_connected()
            # One registration per connection, one running agent on the new server.
            await next_of(life, "agent.running")
            stats = agent.statistics()
            assert (stats.registrations, stats.connects) == (2, 2)
            assert host.server is not None
            assert host.server.statistics().registered == 1
            info = host.runtime.directory.get("r1")
            assert info is not None
            assert set(info.patterns) >= {"input.*", "extra.*"}

            # Events published after the restart arrive exactly once, in order.
            for i in range(20):
                await bus.publish("input.a", Event(type="n", payload=str(i).encode()))
                await bus.publish("extra.b", Event(type="n", payload=str(i).encode()))
            await bus.publish("input.a", Event(type="end"))
            got: list[tuple[str, bytes]] = []
            with anyio.fail_after(5):
                async for delivery in agent:
                    if delivery.event.type == "end":
                        break
                    got.append((delivery.topic, delivery.event.payload))
        assert sorted(got) == sorted(
            [(t, str(i).encode()) for i in range(20) for t in ("input.a", "extra.b")]
        )
        assert [p for t, p in got if t == "input.a"] == [str(i).encode() for i in range(20)]
    assert seen[:3] == [
        (C.CONNECTING, C.CONNECTED),
        (C.CONNECTED, C.RECONNECTING),
        (C.RECONNECTING, C.CONNECTED),
    ]
    assert seen[-1] == (C.CONNECTED, C.CLOSED)
