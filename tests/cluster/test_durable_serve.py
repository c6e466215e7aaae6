"""Durable delivery through a real ``loom serve`` subprocess (its embedded ``nats-server`` on
the test's own data dir), between remote peers in processes of their own
(``_durable_peers.py``), with real signals:

* ``loom serve`` SIGKILLed during a 100,000-event durable stream and started again on the
  same data dir and port: every event the publisher saw accepted reaches the durable agent's
  handler (redeliveries allowed, and marked); lost = 0, counted and printed.
* a remote durable agent SIGKILLed in the middle of its handler: the event comes again to
  the restarted agent, and nothing published meanwhile is lost.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from ..sdk._cli_support import Running, clean_env, free_port, running, running_argv

pytestmark = pytest.mark.anyio

PEERS = [sys.executable, "-u", str(Path(__file__).with_name("_durable_peers.py"))]
LISTENING = r"listening on (\S+:\d+)"

# The figure. LOOM_TEST_DURABLE_EVENTS lowers it for a quick local run.
EVENTS = int(os.environ.get("LOOM_TEST_DURABLE_EVENTS", "100000"))


def _handled(out: Path) -> list[tuple[int, int, str]]:
    """The handler's lines: (event number, delivery.attempt, delivery.redelivered)."""
    rows = []
    for line in out.read_text().splitlines():
        fields = line.split()
        if len(fields) == 3:  # a line cut by a kill -9 has fewer
            rows.append((int(fields[0]), int(fields[1]), fields[2]))
    return rows


async def _serve(stack: AsyncExitStack, tmp_path: Path, port: int) -> tuple[Running, str]:
    """``loom serve`` on ``port`` with its data under ``tmp_path/serve-data`` (the same dir
    on every start: its JetStream store), and the address it listens on."""
    data = str(tmp_path / "serve-data")
    server = await stack.enter_async_context(
        running("serve", "--port", str(port), "--data-dir", data, cwd=tmp_path)
    )
    address = (await server.wait_for(LISTENING, timeout=60)).group(1)
    return server, address


async def _handled_all(out: Path, wanted: set[int], timeout: float) -> set[int]:
    """What of ``wanted`` the handler has not handled once ``timeout`` passed, or nothing.
    Another process writes the file: polled, bounded by ``timeout``."""
    with anyio.move_on_after(timeout):
        while True:
            missing = wanted - {n for n, _, _ in _handled(out)}
            if not missing:
                return missing
            await anyio.sleep(0.2)
    return wanted - {n for n, _, _ in _handled(out)}


@pytest.mark.soak
async def test_sigkill_of_loom_serve_mid_stream_loses_no_accepted_event(tmp_path: Path) -> None:
    handled_file, accepted_file = tmp_path / "handled.txt", tmp_path / "accepted.txt"
    handled_file.write_text("")
    port = free_port()  # the same port after the restart: the peers reconnect to it
    kill_at = (EVENTS * 3 // 10) // 1000 * 1000 or 1000
    started = anyio.current_time()
    with anyio.fail_after(600):
        async with AsyncExitStack() as stack:
            first, address = await _serve(stack, tmp_path, port)
            argv = [*PEERS, "handler", address, "sink", "load.>", str(handled_file), "-"]
            handler = await stack.enter_async_context(running_argv(argv, cwd=tmp_path))
            await handler.wait_for(r'"ready": true', timeout=60)
            argv = [*PEERS, "publisher", address, "load.x", "0", str(EVENTS), "64"]
            argv.append(str(accepted_file))
            publisher = await stack.enter_async_context(running_argv(argv, cwd=tmp_path))
            await publisher.wait_for(rf'"accepted": {kill_at}\b', timeout=300)

            # No drain, no cleanup in loom serve; its nats-server dies with it (PDEATHSIG).
            first.signal(signal.SIGKILL)
            await first.process.wait()
            killed_at = anyio.current_time()
            await _serve(stack, tmp_path, port)  # same data dir: the same JetStream store

            done = await publisher.wait_for(r'"done": (\d+), "retries": (\d+)', timeout=400)
            accepted = {int(line) for line in accepted_file.read_text().split()}
            missing = await _handled_all(handled_file, accepted, timeout=120)
        elapsed = anyio.current_time() - started

    rows = _handled(handled_file)
    seen = Counter(n for n, _, _ in rows)
    redelivered = sum(1 for _, a, _ in rows if a > 1)
    unmarked = sum(1 for n, a, _ in rows if a == 1 and seen[n] > 1) - len(
        {n for n, a, _ in rows if a == 1 and seen[n] > 1}
    )
    print(
        f"\nloom serve SIGKILLed after {kill_at} of {EVENTS} accepted "
        f"({killed_at - started:.1f}s in): accepted {len(accepted)}, "
        f"handled {len(seen)} distinct in {len(rows)} deliveries, "
        f"redelivered (marked) {redelivered}, again unmarked {unmarked}, "
        f"publisher retries {done.group(2)}, lost {len(missing)}; {elapsed:.1f}s in all"
    )
    assert len(accepted) == int(done.group(1)) == EVENTS  # each was retried until accepted
    assert len(missing) == 0, f"lost {len(missing)} accepted events: {sorted(missing)[:20]}"
    # A redelivery JetStream counted is marked: attempt 2 or more says redelivered. (What it
    # delivered in its last moments before the SIGKILL it may not have written down, so
    # those come again as attempt 1: "again unmarked", docs/durability.md.)
    assert all(r == ("true" if a > 1 else "false") for _, a, r in rows)


async def test_kill_9_of_a_remote_durable_agent_of_loom_serve(tmp_path: Path) -> None:
    out = tmp_path / "handled.txt"
    out.write_text("")
    env = clean_env(LOOM_AGENT_SECRET=secrets.token_urlsafe(24))

    async def publish(address: str, first: int) -> None:
        # Three events from a peer process, each accepted (stored) before it says done.
        argv = [*PEERS, "publisher", address, "work.x", str(first), "3", "1"]
        async with running_argv([*argv, str(tmp_path / f"sent-{first}")], cwd=tmp_path) as pub:
            await pub.wait_for(r'"done": 3', timeout=60)

    with anyio.fail_after(120):
        async with AsyncExitStack() as stack:
            _server, address = await _serve(stack, tmp_path, 0)
            handler = [*PEERS, "handler", address, "crashy", "work.>", str(out)]
            first = await stack.enter_async_context(
                running_argv([*handler, "2"], cwd=tmp_path, env=env)
            )
            await first.wait_for(r'"ready": true', timeout=60)
            await publish(address, 1)  # 1, 2, 3, one at a time
            while (2, 1, "false") not in _handled(out):  # noqa: ASYNC110
                await anyio.sleep(0.02)  # another process writes it: polled, bounded above
            first.signal(signal.SIGKILL)  # in the middle of handling event 2
            await first.process.wait()
            await publish(address, 4)  # 4, 5, 6 while the agent is down: kept for it
            second = await stack.enter_async_context(
                running_argv([*handler, "-"], cwd=tmp_path, env=env)
            )
            await second.wait_for(r'"ready": true', timeout=60)
            assert not await _handled_all(out, {2, 3, 4, 5, 6}, timeout=30)
    rows = _handled(out)
    assert rows[:2] == [(1, 1, "false"), (2, 1, "false")]
    after = rows[2:]
    assert (2, 2, "true") in after  # the event it died on, again, marked
    assert sorted(n for n, _, _ in after) == [2, 3, 4, 5, 6]
    # What was published while it was down came once each, and the first deliveries in
    # publish order. (Some of them may come as attempt 2, marked: if the server had not yet
    # seen the killed stream end, it sent them there and they came back after `ack_wait`;
    # a redelivery is not in order, docs/durability.md "Ordering".)
    kept = [(n, a) for n, a, _ in after if n >= 4]
    assert sorted(n for n, _ in kept) == [4, 5, 6]
    firsts = [n for n, a in kept if a == 1]
    assert firsts == sorted(firsts)
    assert all(r == ("true" if a > 1 else "false") for _, a, r in rows)
