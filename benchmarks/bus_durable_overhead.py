"""Does attaching a durable log slow down publishes that are not durable?

The bus 1:1 and fan-out-10 figures of ``benchmarks/bus.py``, measured on a plain bus and on a
bus with a ``JetStreamLog`` attached (a real ``nats-server -js`` running, one durable
subscription on another pattern), interleaved, best of several runs. The promise
(``docs/durability.md``): a publish that matches no durable pattern never touches NATS, so
the ratio stays within 5%. Also the rate of durable publishes (each awaits JetStream's
store), for scale.

Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import msgspec
import nats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._util import emit
from benchmarks.bus import EVENTS, run_on
from loom.cluster import JetStreamLog
from loom.runtime import EventBus
from loom.runtime.lowlevel import new_id

N = int(os.environ.get("LOOM_BENCH_EVENTS", "200000"))
REPEATS = int(os.environ.get("LOOM_BENCH_REPEATS", "5"))
DURABLE_N = 2000
NATS_SERVER = str(Path(sys.executable).parent / "nats-server")


async def run(bus: EventBus, fanout: int, n: int) -> float:
    topic = "bench.orders.created"
    return await run_on(bus, fanout, topic, topic, n)


async def start_server(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    ports = root / "ports"
    ports.mkdir()
    args = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", "-1", "-sd", str(root / "js")]
    proc = subprocess.Popen(  # noqa: ASYNC220  (a quick fork)
        [*args, "--ports_file_dir", str(ports)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with anyio.fail_after(10):
        # Another process writes the file: polled, bounded by the deadline.
        while not (files := list(ports.glob("*.ports"))) or not files[0].read_text().strip():  # noqa: ASYNC110
            await anyio.sleep(0.01)
    return proc, json.loads(files[0].read_text())["nats"][0]


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = await start_server(Path(tmp))
        try:
            nc = await nats.connect(url)
            try:
                async with (
                    JetStreamLog(nc) as log,
                    EventBus() as plain,
                    EventBus(durable_log=log) as durable,
                    durable.subscribe("audit.>", durable="auditor"),
                ):
                    pairs: list[tuple[str, Callable[[], Awaitable[float]]]] = [
                        ("plain_1to1", lambda: run(plain, 1, N)),
                        ("durable_attached_1to1", lambda: run(durable, 1, N)),
                        ("plain_fanout10", lambda: run(plain, 10, N // 5)),
                        ("durable_attached_fanout10", lambda: run(durable, 10, N // 5)),
                    ]
                    for _, fn in pairs:  # warm-up
                        await fn()
                    best: dict[str, float] = {}
                    for _ in range(REPEATS):
                        for name, fn in pairs:
                            best[name] = max(best.get(name, 0.0), await fn())
                    # Distinct events (ids): the same event again on a topic is JetStream's
                    # duplicate (Nats-Msg-Id) and would measure its dedupe path instead.
                    fresh = [
                        msgspec.structs.replace(EVENTS[i & 1023], id=new_id())
                        for i in range(DURABLE_N)
                    ]
                    before = (await log.statistics()).duplicates
                    start = time.perf_counter()
                    for event in fresh:
                        await durable.publish("audit.x", event)
                    durable_rate = DURABLE_N / (time.perf_counter() - start)
                    duplicates = (await log.statistics()).duplicates - before
            finally:
                await nc.close()
        finally:
            proc.kill()
            proc.wait()
    figures: dict[str, float | int | str | bool] = {
        f"{name}_per_s": round(rate) for name, rate in best.items()
    }
    figures["ratio_1to1_attached_vs_plain"] = round(
        best["durable_attached_1to1"] / best["plain_1to1"], 3
    )
    figures["ratio_fanout10_attached_vs_plain"] = round(
        best["durable_attached_fanout10"] / best["plain_fanout10"], 3
    )
    figures["durable_publish_sequential_per_s"] = round(durable_rate)
    figures["durable_publish_sequential_duplicates"] = duplicates  # 0: each one stored
    emit("bus_durable_overhead", figures)


if __name__ == "__main__":
    anyio.run(main)
