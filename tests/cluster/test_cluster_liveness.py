"""How soon a silent node is declared dead (issue 13 §2: "its agents leave every directory
within two heartbeat intervals"): with the directory's clock in the test's hands (what the
bucket's watch last delivered, and what this node's probe of it does), and with the watch
made again meanwhile, which replays the dead node's last heartbeat and records. A real
nats-server and nodes throughout."""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack

import anyio
import nats.js.errors
import pytest

from loom import Agent
from loom.cluster._directory_wire import agent_key
from loom.cluster._peers import Peers

from .conftest import NatsServerProcess
from .test_cluster_directory import Node, node, slow, wait_until

pytestmark = pytest.mark.anyio

HEARTBEAT = 0.4


async def test_a_silent_node_is_dead_two_intervals_after_its_last_word(
    nats_server: NatsServerProcess,
) -> None:
    async with node(nats_server.url, "a") as a:
        peers = Peers(a.runtime, "a", a.cluster.calls, lambda _id: None)
        peers.heard("b")
        last_word = anyio.current_time()
        # The directory last delivered b's heartbeat itself; this node's own next one is an
        # interval away at best (the unlucky phase: before, b left 2.5 intervals after its
        # last word). The probe is this node's heartbeat written at once, delivered at once.
        heard = last_word
        probes: list[float] = []

        async def probe() -> None:
            nonlocal heard
            heard = anyio.current_time()
            probes.append(heard - last_word)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(peers.sweep, HEARTBEAT, lambda: heard, probe)
                await wait_until(lambda: not peers.alive("b"), timeout=5)
                dead_after = anyio.current_time() - last_word
                tg.cancel_scope.cancel()
        # Probed once b was silent 1.5 intervals, dead at the next quarter interval's sweep
        # (the slack is for the sweep's own ticks on a loaded machine).
        assert probes, dead_after
        assert probes[0] > 1.5 * HEARTBEAT, probes
        assert dead_after <= 2 * HEARTBEAT + 0.2, dead_after


async def test_nobody_is_dead_while_the_directory_is_silent_however_probed(
    nats_server: NatsServerProcess,
) -> None:
    async with node(nats_server.url, "a") as a:
        peers = Peers(a.runtime, "a", a.cluster.calls, lambda _id: None)
        peers.heard("b")
        heard = anyio.current_time()
        probes = 0

        async def probe() -> None:  # the bucket electing a leader: the write is not delivered
            nonlocal probes
            probes += 1

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(peers.sweep, HEARTBEAT, lambda: heard, probe)
                await wait_until(lambda: probes >= 6)
                tg.cancel_scope.cancel()
        # Silent well past 1.5 intervals, but so was the directory: b is not declared dead.
        assert peers.alive("b")


async def replay(a: Node, *keys: str) -> int:
    """Hand ``a``'s directory what a watch of the bucket made again delivers first: each
    key's current entry (the watch is made again when it stalls; docs/cluster.md). How many
    were still there (the bucket's age limit removes a dead node's keys)."""
    assert a.cluster._kv is not None
    handed = 0
    for key in keys:
        try:
            entry = await a.cluster._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            continue
        await a.cluster._watch._deliver(entry)
        handed += 1
    return handed


async def test_a_watch_made_again_keeps_no_dead_node_alive_nor_brings_it_back(
    nats_server: NatsServerProcess,
) -> None:
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, AsyncExitStack() as stack:
            b = await stack.enter_async_context(node(nats_server.url, "b"))
            await b.runtime.start(Agent("sleeper", capabilities=[slow]))
            await wait_until(lambda: "sleeper" in a.runtime.directory)
            keys = ("nodes.b", agent_key("sleeper"))
            await b.client.close()  # b falls silent, its keys stay until their age limit
            gone_at = anyio.current_time()
            replays = 0
            with anyio.fail_after(5):
                while "sleeper" in a.runtime.directory:
                    replays += await replay(a, *keys)  # its last heartbeat, again and again
                    await anyio.sleep(0.05)
            left = anyio.current_time() - gone_at
            assert replays > 0
            # Before, each replay was a heartbeat heard now: b lived until its keys lapsed.
            assert left <= 2 * HEARTBEAT + 0.3, left
            # Its records replayed after its death do not bring its agent back.
            await replay(a, *keys)
            assert "sleeper" not in a.runtime.directory
            assert "b" not in a.cluster.nodes()


async def test_a_replay_is_not_the_directory_speaking(nats_server: NatsServerProcess) -> None:
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            await b.runtime.start(Agent("sleeper", capabilities=[slow]))
            await wait_until(lambda: "sleeper" in a.runtime.directory)
            watch = a.cluster._watch
            # A watch made again during an election replays the bucket while no new write
            # gets through: were that speech, every node whose heartbeats are held up would
            # be silent "while the directory spoke", and declared dead.
            assert a.cluster._kv is not None
            entries = [await a.cluster._kv.get(k) for k in ("nodes.b", agent_key("sleeper"))]
            for entry in entries:  # passed on once (news, if the watch had not yet)
                await watch._deliver(entry)
            heard = watch.heard
            for entry in entries:  # and again, as a watch made again replays them: no yield
                await watch._deliver(entry)
            assert watch.heard == heard


async def test_a_stalled_event_loop_is_not_a_stalled_watch(
    nats_server: NatsServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a:
            watch = a.cluster._watch
            heard = watch.heard
            await wait_until(lambda: watch.heard > heard)  # the watch delivers: it is healthy
            with caplog.at_level(logging.WARNING, logger="loom.cluster"):
                # This process does not run for four intervals (a starved machine): the
                # watch's deliveries meanwhile wait unread.
                time.sleep(4 * HEARTBEAT)  # noqa: ASYNC251  (the stall itself, the fault)
                stalled_at = anyio.current_time()
                await wait_until(lambda: watch.heard > stalled_at)
                # Two of the guard's checks after the stall (an observation window).
                await anyio.sleep(2 * HEARTBEAT)
            # Before, the guard's first check after the stall counted it as the watch's
            # silence and made the watch again.
            again = [
                r.getMessage() for r in caplog.records if "watching it again" in r.getMessage()
            ]
            assert again == []
