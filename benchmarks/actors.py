"""How fast and how small are agents, next to the plain asyncio thing?

* ``mailbox_per_s``: events/s from a publisher through the bus into one agent's handler;
  ``naive_mailbox_per_s``: the same through an ``asyncio.Queue(1000)`` and a consumer task.
* ``ask_p50_us`` / ``ask_p99_us``: request/reply between two agents (``ctx.request`` in one,
  ``ctx.reply`` in the other); ``naive_ask_p50_us``: two tasks ping-ponging over two
  ``asyncio.Queue``s.
* ``idle_agents`` / ``idle_agents_rss_mib``: RSS of this process after starting that many idle
  agents, each with its own topic (``idle_agents_delta_mib``: what they added).

Prints one JSON line. Baselines are measured in the same run, interleaved, best of several.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time

import anyio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._util import emit
from loom import Agent, Context
from loom.runtime import AgentRuntime, Event, EventBus

N = int(os.environ.get("LOOM_BENCH_EVENTS", "200000"))
ASKS = int(os.environ.get("LOOM_BENCH_ASKS", "5000"))
IDLE = int(os.environ.get("LOOM_BENCH_IDLE_AGENTS", "100000"))
REPEATS = int(os.environ.get("LOOM_BENCH_REPEATS", "5"))
SCRIPT = os.path.abspath(__file__)
EVENTS = [Event(type="bench", payload=b"x" * (i % 64)) for i in range(1024)]


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Counter:
    __slots__ = ("bytes", "done", "n", "target")

    def __init__(self, target: int) -> None:
        self.n = 0
        self.bytes = 0
        self.target = target
        self.done = anyio.Event()

    async def handle(self, topic: str, event: Event) -> None:
        self.n += 1
        self.bytes += len(event.payload) + len(topic)
        if self.n == self.target:
            self.done.set()


async def mailbox_run() -> float:
    counter = Counter(N)

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        await counter.handle(topic, event)

    async with EventBus() as bus, AgentRuntime(bus) as rt:
        await rt.start(Agent("sink", topics=["bench.in"], on_event=on_event))
        gc.collect()
        start = time.perf_counter()
        publish = bus.publish
        for i in range(N):
            await publish("bench.in", EVENTS[i & 1023])
        await counter.done.wait()
        elapsed = time.perf_counter() - start
    return N / elapsed


async def naive_mailbox_run() -> float:
    counter = Counter(N)
    queue: asyncio.Queue[tuple[str, Event]] = asyncio.Queue(1000)

    async def consume() -> None:
        while True:
            topic, event = await queue.get()
            await counter.handle(topic, event)
            if counter.n == N:
                return

    gc.collect()
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        for i in range(N):
            await queue.put(("bench.in", EVENTS[i & 1023]))
    elapsed = time.perf_counter() - start
    return N / elapsed


async def ask_run() -> list[float]:
    latencies: list[float] = []
    done = anyio.Event()

    async def respond(ctx: Context, topic: str, event: Event) -> None:
        await ctx.reply(event, event.payload)

    async def ask(ctx: Context, topic: str, event: Event) -> None:
        for i in range(ASKS):
            t0 = time.perf_counter()
            await ctx.request("svc.echo", EVENTS[i & 1023].payload, timeout=5)
            latencies.append(time.perf_counter() - t0)
        done.set()

    async with EventBus() as bus, AgentRuntime(bus) as rt:
        await rt.start(Agent("responder", topics=["svc.echo"], on_event=respond))
        await rt.start(Agent("asker", topics=["bench.go"], on_event=ask))
        gc.collect()
        await bus.publish("bench.go", Event())
        await done.wait()
    return latencies


async def naive_ask_run() -> list[float]:
    requests: asyncio.Queue[bytes] = asyncio.Queue(1000)
    replies: asyncio.Queue[bytes] = asyncio.Queue(1000)
    latencies: list[float] = []

    async def responder() -> None:
        while True:
            payload = await requests.get()
            await replies.put(payload)

    async with anyio.create_task_group() as tg:
        tg.start_soon(responder)
        gc.collect()
        for i in range(ASKS):
            t0 = time.perf_counter()
            await requests.put(EVENTS[i & 1023].payload)
            await replies.get()
            latencies.append(time.perf_counter() - t0)
        tg.cancel_scope.cancel()
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


async def idle_agents_rss(count: int) -> tuple[float, float]:
    """RSS of this process after starting ``count`` idle agents, and what they added."""
    gc.collect()
    before = rss_mib()
    async with EventBus() as bus, AgentRuntime(bus) as rt:
        for i in range(count):
            await rt.start(Agent(f"idle{i}", topics=[f"idle.{i}.work"]))
        gc.collect()
        after = rss_mib()
        assert len(rt.directory) == count
    return after, after - before


async def idle_run() -> tuple[float, float]:
    """Idle agents measured in a fresh process, so nothing the other figures allocated
    (and the allocator kept) is counted against them."""
    result = await anyio.run_process([sys.executable, SCRIPT, "--idle", str(IDLE)], check=True)
    rss, delta = result.stdout.decode().split()
    return float(rss), float(delta)


async def main() -> None:
    await mailbox_run()  # warm-up
    await naive_mailbox_run()
    mailbox = naive = 0.0
    ask_p50 = ask_p99 = naive_p50 = float("inf")
    for _ in range(REPEATS):
        mailbox = max(mailbox, await mailbox_run())
        naive = max(naive, await naive_mailbox_run())
        lat = await ask_run()
        if pct(lat, 0.5) < ask_p50:
            ask_p50, ask_p99 = pct(lat, 0.5), pct(lat, 0.99)
        naive_p50 = min(naive_p50, pct(await naive_ask_run(), 0.5))
    rss, delta = await idle_run()
    emit(
        "actors",
        {
            "mailbox_per_s": round(mailbox),
            "naive_mailbox_per_s": round(naive),
            "ratio_mailbox_vs_naive": round(mailbox / naive, 3),
            "ask_p50_us": round(ask_p50, 1),
            "ask_p99_us": round(ask_p99, 1),
            "naive_ask_p50_us": round(naive_p50, 1),
            "ratio_ask_p50_vs_naive": round(ask_p50 / naive_p50, 3),
            "idle_agents": IDLE,
            "idle_agents_rss_mib": round(rss, 1),
            "idle_agents_delta_mib": round(delta, 1),
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--idle"]:
        print(*anyio.run(idle_agents_rss, int(sys.argv[2]), backend="asyncio"))
    else:
        anyio.run(main, backend="asyncio")
