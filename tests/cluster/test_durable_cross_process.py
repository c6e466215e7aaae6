"""A durable name made by another process is stored for at once, not after a restart.

Two real processes share one real nats-server: this one's bus starts first (so it cannot have
learnt the name at start); a child process then makes the durable subscription and says when
``subscribe`` has been entered. This process learns the name from the server's advisory, and
every publish from here after that is stored for it (without the advisory: none would be).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import pytest

from loom.runtime import Event

from ._jetstream_support import durable_bus, nats_server

pytestmark = pytest.mark.anyio

# The child: makes durable "cross" on "cross.>", prints the monotonic time (system-wide on
# Linux, so comparable across processes) once the subscription is open, then takes `n`
# deliveries, acknowledges them and prints their topics.
CHILD = """
import sys, time, anyio, nats
from loom.cluster import JetStreamLog
from loom.runtime import EventBus, QoS

async def main(url: str, n: int) -> None:
    nc = await nats.connect(url)
    async with JetStreamLog(nc) as log, EventBus(durable_log=log) as bus:
        async with bus.subscribe("cross.>", qos=QoS.BATCHED, durable="cross") as sub:
            print("open", time.monotonic(), flush=True)
            seen = []
            if n:
                async for msg in sub:
                    seen.append(msg.event.id)
                    await sub.ack(msg)
                    if len(seen) == n:
                        break
            print("got", " ".join(seen), flush=True)
    await nc.close()

anyio.run(main, sys.argv[1], int(sys.argv[2]))
"""


async def test_a_durable_name_made_by_another_process_is_stored_at_once(tmp_path: Path) -> None:
    n = 50
    with anyio.fail_after(60):
        async with nats_server(tmp_path) as server, durable_bus(server) as (bus, log):
            learnt: list[float] = []
            log.watch(lambda patterns: learnt.append(time.monotonic()))
            assert "cross.>" not in log.patterns()
            child = await anyio.open_process(
                [sys.executable, "-c", CHILD, server.url, str(n)], stderr=None
            )
            try:
                assert child.stdout is not None
                lines = child.stdout
                buf = b""
                while b"\n" not in buf:
                    buf += await lines.receive()
                first, _, buf = buf.partition(b"\n")
                kind, opened = first.decode().split()
                assert kind == "open"
                # The announcement travels: this process learns the name within moments of
                # the other's open (the window docs/durability.md states), never at restart.
                # Polled: the learning happens in the NATS client's task, bounded above.
                while not learnt:  # noqa: ASYNC110
                    await anyio.sleep(0.001)
                assert "cross.>" in log.patterns()
                ids = []
                for i in range(n):
                    event = Event(type="t", payload=b"%d" % i)
                    ids.append(event.id)
                    await bus.publish(f"cross.{i % 3}", event)
                while not buf.endswith(b"\n"):
                    buf += await lines.receive()
                kind, *got = buf.decode().split()
                assert kind == "got"
                assert sorted(got) == sorted(ids)
                await child.wait()
                assert child.returncode == 0
            finally:
                if child.returncode is None:
                    child.kill()
                    with anyio.CancelScope(shield=True):
                        await child.wait()
                await child.aclose()
            window = learnt[0] - float(opened)
            print(f"learnt {window * 1000:.2f} ms after the other process's open")
