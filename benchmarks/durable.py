"""How fast is a durable subscription, and how quickly does it recover?

Everything on a real ``nats-server -js`` (the virtualenv's ``nats-server``, the one ``loom
serve`` embeds) that this script starts on a free port and waits for (its ports file):

* ``durable_events_per_s``: a bus with a ``JetStreamLog`` publishing to a durable subscription
  in the same process (remote durable agents over the wire come later), the subscriber
  taking and acknowledging every event; ``LOOM_BENCH_DURABLE_PUBLISHERS`` publisher tasks,
  each awaiting its store as ``await bus.publish`` does. Against
  ``raw_jetstream_events_per_s``: plain nats-py, ``publish_async`` with the same number of
  acknowledgements in flight, and a pull consumer fetching and acknowledging; same message
  size, same server. Interleaved, best of ``LOOM_BENCH_REPEATS``. Target: ratio >= 0.5.
* ``redelivery_after_kill_ms``: p50 over ``LOOM_BENCH_KILLS`` rounds: a subscriber process
  holds an event unacknowledged and is SIGKILLed; a new process opens the same durable name.
  Measured from that process's first fetch (its start-up excluded) to the event reaching its
  handler again. JetStream redelivers once the ack wait has run out, so the figure is mostly
  what is left of ``ack_wait`` (``LOOM_BENCH_ACK_WAIT`` s here, 30 s by default in Loom).
* ``restart_recovery_s``: ``LOOM_BENCH_RECOVERY_EVENTS`` (100,000) events stored, the server
  SIGKILLed and started again on the same port and store: the time from its start to the
  first delivery to a durable subscription (server recovery, reconnect, fetch).

Prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import msgspec
import nats
from anyio.abc import Process
from nats.aio.client import Client

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._util import emit
from loom.cluster import JetStreamLog
from loom.runtime import Event, EventBus, QoS

N = int(os.environ.get("LOOM_BENCH_DURABLE_EVENTS", "20000"))
PUBLISHERS = int(os.environ.get("LOOM_BENCH_DURABLE_PUBLISHERS", "64"))
FETCH = int(os.environ.get("LOOM_BENCH_DURABLE_FETCH", "64"))
SIZE = int(os.environ.get("LOOM_BENCH_DURABLE_PAYLOAD", "256"))
REPEATS = int(os.environ.get("LOOM_BENCH_REPEATS", "3"))
KILLS = int(os.environ.get("LOOM_BENCH_KILLS", "5"))
ACK_WAIT = float(os.environ.get("LOOM_BENCH_ACK_WAIT", "1.0"))
RECOVERY = int(os.environ.get("LOOM_BENCH_RECOVERY_EVENTS", "100000"))
NATS_SERVER = str(Path(sys.executable).parent / "nats-server")
EVENT = Event(type="bench", payload=b"x" * SIZE)
RAW = b"x" * len(msgspec.msgpack.encode(EVENT))  # the same size as the stored event


class Server:
    """One nats-server with JetStream; the first start picks a free port, restarts reuse it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = -1
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        ports = self.root / f"ports-{time.monotonic_ns()}"
        ports.mkdir()
        args = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(  # noqa: ASYNC220  (a quick fork)
            [*args, "-sd", str(self.root / "js"), "--ports_file_dir", str(ports)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with anyio.fail_after(60):
            # Another process writes the file: polled, bounded by the deadline.
            while not (files := list(ports.glob("*.ports"))) or not files[0].read_text().strip():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nats-server exited with {self.proc.returncode}")
                await anyio.sleep(0.005)
        self.port = int(json.loads(files[0].read_text())["nats"][0].rsplit(":", 1)[1])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None


async def durable_run(bus: EventBus, tag: int) -> float:
    topic = f"bench.durable.{tag}"
    # Distinct events: the same event twice on a topic is one stored message (deduplicated).
    events = [Event(type="bench", payload=EVENT.payload) for _ in range(N)]
    async with bus.subscribe(topic, qos=QoS.BATCHED, durable=f"bench{tag}") as sub:
        gc.collect()
        start = time.perf_counter()

        async def publisher(first: int) -> None:
            for i in range(first, N, PUBLISHERS):
                await bus.publish(topic, events[i])

        async with anyio.create_task_group() as tg:
            for i in range(PUBLISHERS):
                tg.start_soon(publisher, i)
            got = 0
            async for msg in sub:
                got += 1
                if got == N:
                    await sub.ack(msg)
                    break
        return N / (time.perf_counter() - start)


async def raw_run(nc: Client, tag: int) -> float:
    js = nc.jetstream(publish_async_max_pending=PUBLISHERS)
    subject = f"raw.bench.{tag}"
    psub = await js.pull_subscribe(subject, durable=f"raw{tag}", stream="RAW_BENCH")
    gc.collect()
    start = time.perf_counter()

    async def produce() -> None:
        for _ in range(N):
            await js.publish_async(subject, RAW)
        await js.publish_async_completed()

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        got = 0
        while got < N:
            try:
                msgs = await psub.fetch(FETCH, timeout=5)
            except TimeoutError:
                continue
            for m in msgs:
                await m.ack()
            got += len(msgs)
    rate = N / (time.perf_counter() - start)
    await psub.unsubscribe()
    return rate


async def throughput(server: Server) -> dict[str, float]:
    nc = await nats.connect(server.url)
    try:
        await nc.jetstream().add_stream(name="RAW_BENCH", subjects=["raw.>"])
        async with JetStreamLog(nc) as log, EventBus(durable_log=log) as bus:
            best = {"durable": 0.0, "raw": 0.0}
            for tag in range(REPEATS + 1):  # the first round warms up
                durable = await durable_run(bus, tag)
                raw = await raw_run(nc, tag)
                if tag:
                    best["durable"] = max(best["durable"], durable)
                    best["raw"] = max(best["raw"], raw)
            return best
    finally:
        await nc.close()


# The subscriber process of the kill rounds. `hold`: take one delivery, say so, never answer
# (SIGKILLed). `take`: say when it first fetches, then when the event reached the handler.
SUBSCRIBER = """
import sys, time, anyio, nats
from loom.cluster import JetStreamLog
from loom.runtime import EventBus, QoS

async def main(url: str, mode: str, ack_wait: float) -> None:
    nc = await nats.connect(url)
    async with JetStreamLog(nc, ack_wait=ack_wait) as log, EventBus(durable_log=log) as bus:
        async with bus.subscribe("kill.>", qos=QoS.BATCHED, durable="killed") as sub:
            print("fetch", time.monotonic(), flush=True)
            async for msg in sub:
                print("got", time.monotonic(), msg.attempt, flush=True)
                if mode == "hold":
                    await anyio.sleep_forever()
                await sub.ack(msg)
                break
    await nc.close()

anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
"""


class Lines:
    """The lines a child process prints, taken by their first word."""

    def __init__(self, proc: Process) -> None:
        assert proc.stdout is not None
        self._out = proc.stdout
        self._buf = b""

    async def take(self, kind: str) -> list[str]:
        while True:
            line, sep, rest = self._buf.partition(b"\n")
            if not sep:
                self._buf += await self._out.receive()
                continue
            self._buf = rest
            fields = line.decode().split()
            if fields[0] == kind:
                return fields[1:]


async def redelivery(server: Server) -> list[float]:
    nc = await nats.connect(server.url)
    samples: list[float] = []
    try:
        async with JetStreamLog(nc, ack_wait=ACK_WAIT) as log, EventBus(durable_log=log) as bus:
            bus.register_durable("killed", ("kill.>",))
            for i in range(KILLS):
                cmd = [sys.executable, "-c", SUBSCRIBER, server.url]
                with anyio.fail_after(60):
                    holder = await anyio.open_process([*cmd, "hold", str(ACK_WAIT)])
                    held = Lines(holder)
                    await held.take("fetch")
                    await bus.publish(f"kill.{i}", Event(type="bench", payload=EVENT.payload))
                    await held.take("got")
                    holder.send_signal(signal.SIGKILL)
                    await holder.wait()
                    await holder.aclose()
                    taker = await anyio.open_process([*cmd, "take", str(ACK_WAIT)])
                    taken = Lines(taker)
                    first_fetch = float((await taken.take("fetch"))[0])
                    got, attempt = await taken.take("got")
                    assert int(attempt) >= 2, "not a redelivery"
                    await taker.wait()
                    await taker.aclose()
                samples.append((float(got) - first_fetch) * 1000)
    finally:
        await nc.close()
    return samples


async def recovery(server: Server) -> float:
    nc = await nats.connect(server.url)
    try:
        async with JetStreamLog(nc) as log:
            log.register("recovering", ("recover.>",))
            consumer = await log.open_consumer(
                "recovering", ("recover.>",), max_deliver=5, max_ack_pending=1000
            )
            await consumer.aclose()
        js = nc.jetstream(publish_async_max_pending=1000)
        data = msgspec.msgpack.encode(EVENT)
        for i in range(RECOVERY):
            await js.publish_async(f"loom.stored.recover.{i % 16}", data)
        await js.publish_async_completed()
    finally:
        await nc.close()
    server.kill()
    start = time.perf_counter()
    await server.start()
    nc = await nats.connect(server.url, connect_timeout=60)
    try:
        async with JetStreamLog(nc) as log, EventBus(durable_log=log) as bus:
            sub = bus.subscribe("recover.>", qos=QoS.BATCHED, durable="recovering")
            async with sub:
                await sub.receive()
                return time.perf_counter() - start
    finally:
        await nc.close()


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        await server.start()
        try:
            best = await throughput(server)
            kills = await redelivery(server)
            recovered = await recovery(server)
        finally:
            server.kill()
    emit(
        "durable",
        {
            "durable_events_per_s": round(best["durable"]),
            "raw_jetstream_events_per_s": round(best["raw"]),
            "ratio_durable_vs_raw": round(best["durable"] / best["raw"], 3),
            "events": N,
            "publishers_in_flight": PUBLISHERS,
            "payload_bytes": len(RAW),
            "redelivery_after_kill_ms": round(statistics.median(kills), 1),
            "redelivery_after_kill_max_ms": round(max(kills), 1),
            "ack_wait_s": ACK_WAIT,
            "restart_recovery_s": round(recovered, 3),
            "recovery_events": RECOVERY,
        },
    )


if __name__ == "__main__":
    anyio.run(main)
