"""How fast is a durable subscription, and how quickly does it recover?

Everything on the virtualenv's ``nats-server`` (the one ``loom serve`` embeds):

* ``durable_events_per_s``: the issue's path. A real ``loom serve`` subprocess (its embedded
  ``nats-server`` on a temporary data dir); a remote publisher process (``BridgeClient``,
  what a remote agent's ``ctx.emit`` calls) publishing ``LOOM_BENCH_DURABLE_EVENTS`` distinct
  events, ``LOOM_BENCH_DURABLE_PUBLISHERS`` waiting for their acceptance at a time (each
  accepted once JetStream stored it); a remote ``Agent(durable=True)`` process whose handler
  takes each one, acknowledged as it returns (``benchmarks/_durable_agents.py``). From the
  publisher's first publish to the handler's last distinct event, started-up processes.
* ``durable_in_process_events_per_s``: the same in one process, for where the time goes: a
  bus with a ``JetStreamLog`` and a durable subscription taking and acknowledging each,
  as many publisher tasks each awaiting its store.
* ``raw_jetstream_events_per_s``: plain nats-py against a ``nats-server -js`` of the same
  binary that this script starts on a free port (its ports file): ``publish_async`` with the
  same number of acknowledgements in flight, and a pull consumer fetching and
  acknowledging; the same message size. Interleaved with the two above, best of
  ``LOOM_BENCH_REPEATS``. Target: ``ratio_durable_vs_raw`` >= 0.5.
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
import re
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
REMOTE_N = int(os.environ.get("LOOM_BENCH_DURABLE_REMOTE_EVENTS", "10000"))
PUBLISHERS = int(os.environ.get("LOOM_BENCH_DURABLE_PUBLISHERS", "64"))
FETCH = int(os.environ.get("LOOM_BENCH_DURABLE_FETCH", "64"))
SIZE = int(os.environ.get("LOOM_BENCH_DURABLE_PAYLOAD", "256"))
REPEATS = int(os.environ.get("LOOM_BENCH_REPEATS", "3"))
KILLS = int(os.environ.get("LOOM_BENCH_KILLS", "5"))
ACK_WAIT = float(os.environ.get("LOOM_BENCH_ACK_WAIT", "1.0"))
RECOVERY = int(os.environ.get("LOOM_BENCH_RECOVERY_EVENTS", "100000"))
NATS_SERVER = str(Path(sys.executable).parent / "nats-server")
AGENTS = [sys.executable, "-u", str(Path(__file__).with_name("_durable_agents.py"))]
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


async def serve(root: Path) -> tuple[Process, str]:
    """A real ``loom serve`` (embedded NATS, data under ``root``), and its address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    argv = [sys.executable, "-m", "loom.cli", "serve", "--port", "0"]
    log = root / "serve.log"  # a file, not a pipe: nobody has to keep reading it
    with log.open("wb") as out:
        proc = await anyio.open_process(
            [*argv, "--data-dir", str(root / "serve")], stdout=out, stderr=out, env=env
        )
    with anyio.fail_after(60):
        # Another process writes the file: polled, bounded by the deadline.
        while (m := re.search(r"listening on (\S+:\d+)", log.read_text())) is None:
            if proc.returncode is not None:
                raise RuntimeError(f"loom serve exited: {log.read_text()}")
            await anyio.sleep(0.05)
    return proc, m.group(1)


async def remote_run(address: str, tag: int) -> float:
    """One round of the issue's path (see the module docs): events per second."""
    topic = f"bench.remote.{tag}"
    handler = await anyio.open_process(
        [*AGENTS, "handler", address, f"bench-durable-{tag}", topic, str(REMOTE_N)]
    )
    try:
        handled = Lines(handler)
        with anyio.fail_after(60):
            await handled.take("ready")  # registered: its durable name exists
        args = [address, topic, str(REMOTE_N), str(PUBLISHERS), str(SIZE)]
        publisher = await anyio.open_process([*AGENTS, "publisher", *args])
        try:
            published = Lines(publisher)
            with anyio.fail_after(600):
                start = float((await published.take("start"))[0])
                end = float((await handled.take("end"))[0])
        finally:
            await publisher.aclose()  # its stdin closed: it disconnects and exits
    finally:
        await handler.aclose()
    return REMOTE_N / (end - start)


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


async def throughput(server: Server, address: str) -> dict[str, float]:
    nc = await nats.connect(server.url)
    try:
        await nc.jetstream().add_stream(name="RAW_BENCH", subjects=["raw.>"])
        async with JetStreamLog(nc) as log, EventBus(durable_log=log) as bus:
            best = {"durable": 0.0, "in_process": 0.0, "raw": 0.0}
            for tag in range(REPEATS + 1):  # the first round warms up
                rates = {
                    "durable": await remote_run(address, tag),
                    "in_process": await durable_run(bus, tag),
                    "raw": await raw_run(nc, tag),
                }
                if tag:
                    best = {k: max(best[k], rates[k]) for k in best}
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
        loom_serve, address = await serve(Path(tmp))
        try:
            try:
                best = await throughput(server, address)
            finally:
                loom_serve.send_signal(signal.SIGTERM)  # it drains, then stops its NATS
                with anyio.fail_after(30):
                    await loom_serve.wait()
                await loom_serve.aclose()
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
            "durable_in_process_events_per_s": round(best["in_process"]),
            "remote_events": REMOTE_N,
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
