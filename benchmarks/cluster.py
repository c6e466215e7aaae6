"""How fast do events cross ``loom serve`` nodes, next to plain NATS doing the least it could?
And what does a node pay for being in a cluster when its traffic is all local?

All in one run, on one machine, one ``nats-server`` (the virtualenv's binary) on a free port.
Figures (one JSON line; each the best of ``LOOM_BENCH_REPEATS`` runs, the Loom and raw runs
interleaved):

* ``cluster_events_per_s``: two nodes (``loom serve --nats URL --node a|b`` subprocesses);
  a publisher agent's connection (``BridgeClient.publish``, what ``ctx.emit`` calls) on node
  a, a subscriber agent's (``receive``) on node b, Batched; from the first publish to the
  last event received. Both clients in this process.
* ``cluster_realtime_events_per_s``: the same with a Realtime subscriber (drops allowed and
  reported: ``cluster_realtime_dropped``); events received per second.
* ``raw_nats_events_per_s``: plain nats-py, one connection publishing ``n`` messages of the
  same payload size, another subscribed receiving them, in this process.
* ``cluster_bus_events_per_s``: two ``EventBus`` es with a ``ClusterTransport`` each, in this
  process, on their own connections: the transport alone, without the two gRPC hops.
* ``same_node_events_per_s``: the Batched run with the subscriber on node a too: the two
  gRPC bridge hops without the cluster, the ceiling the bridged figures above can reach.
* ``cluster_cpu_s_{driver,node_a,node_b,nats}``: the CPU seconds each process spent in the
  best Batched run: where the time goes.
* ``local_plain_1to1_per_s`` / ``local_transport_1to1_per_s`` /
  ``local_transport_remote_unrelated_1to1_per_s``: ``benchmarks/bus.py``'s 1:1 run on a plain
  bus, on a bus with a ``ClusterTransport`` and no other node, and on one whose other node
  holds interest in other topics only. The promise: within 5%.

Each measurement is a function returning its figures; a new one (the directory's tool round
trip, say) is another function added to ``MEASUREMENTS``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import nats
from anyio.abc import Process

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._util import emit
from benchmarks.bus import run_on
from loom.bridge import AgentRegistration, BridgeClient, ClientOptions
from loom.cluster import ClusterTransport
from loom.runtime import Event, EventBus, QoS

N = int(os.environ.get("LOOM_BENCH_CLUSTER_EVENTS", "20000"))
LOCAL_N = int(os.environ.get("LOOM_BENCH_EVENTS", "200000"))
REPEATS = int(os.environ.get("LOOM_BENCH_REPEATS", "3"))
# The local runs are short and the machine noisy: more of them (the best is kept).
LOCAL_REPEATS = int(os.environ.get("LOOM_BENCH_LOCAL_REPEATS", "9"))
PAYLOAD = int(os.environ.get("LOOM_BENCH_CLUSTER_PAYLOAD", "100"))
NATS_SERVER = str(Path(sys.executable).parent / "nats-server")
LOOM = [sys.executable, "-m", "loom.cli"]
OPTIONS = ClientOptions(connect_timeout=30.0, rpc_timeout=10.0)

Figures = dict[str, float | int | str | bool]


class Cluster:
    """The NATS server's URL and the nodes' bridge addresses, by node name."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.nodes: dict[str, str] = {}
        self.pids: dict[str, int] = {}  # "nats", and each node's name

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds (user + system) each process has used so far, this one as "driver"."""
        tick = os.sysconf("SC_CLK_TCK")
        used = {"driver": sum(os.times()[:2])}
        for name, pid in self.pids.items():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        return used


async def _lines(process: Process, pattern: str, seen: list[str]) -> re.Match[str]:
    """The first line of ``process``'s output matching ``pattern`` (bounded by the caller),
    among the lines ``seen`` already too (one chunk may hold the lines two calls wait for)."""
    assert process.stdout is not None
    regex = re.compile(pattern)
    for text in seen:
        if (m := regex.search(text)) is not None:
            return m
    pending = b""
    async for chunk in process.stdout:
        pending += chunk
        *done, pending = pending.split(b"\n")
        found: re.Match[str] | None = None
        for line in done:
            seen.append(line.decode(errors="replace"))
            if found is None:
                found = regex.search(seen[-1])
        if found is not None:
            return found
    raise RuntimeError("process ended before it was ready:\n" + "\n".join(seen))


def _kill(process: Process) -> None:
    if process.returncode is None:
        process.kill()


async def _drain(process: Process) -> None:
    assert process.stdout is not None
    async for _ in process.stdout:  # keep reading, so a full pipe never blocks it
        pass


@asynccontextmanager
async def cluster(root: Path, names: tuple[str, ...]) -> AsyncIterator[Cluster]:
    """A nats-server and one ``loom serve`` node per name on it, all stopped on leaving."""
    ports = root / "ports"
    ports.mkdir()
    argv = [NATS_SERVER, "-js", "-sd", str(root / "js"), "-a", "127.0.0.1", "-p", "-1"]
    argv += ["--ports_file_dir", str(ports)]
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        server = await anyio.open_process(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        stack.push_async_callback(server.aclose)
        stack.callback(server.kill)
        with anyio.fail_after(10):
            # Another process writes the file: polled, bounded by the deadline.
            while not (files := list(ports.glob("*.ports"))) or not files[0].read_text().strip():  # noqa: ASYNC110
                await anyio.sleep(0.01)
        where = Cluster(json.loads(files[0].read_text())["nats"][0])
        where.pids["nats"] = server.pid
        for name in names:
            args = ["serve", "--port", "0", "--data-dir", str(root / name)]
            args += ["--nats", where.url, "--node", name]
            node = await anyio.open_process(
                [*LOOM, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            stack.push_async_callback(node.aclose)
            stack.callback(_kill, node)
            seen: list[str] = []
            with anyio.fail_after(60):
                await _lines(node, r"cluster node ", seen)  # said before it listens
                match = await _lines(node, r"listening on (\S+:\d+)", seen)
            tg.start_soon(_drain, node)
            where.nodes[name] = match.group(1)
            where.pids[f"node_{name}"] = node.pid
        try:
            yield where
        finally:
            tg.cancel_scope.cancel()


async def _routed(pub: BridgeClient, sub: BridgeClient, topic: str) -> None:
    with anyio.fail_after(30):
        while True:
            await pub.publish(topic, Event(type="probe"))
            with anyio.move_on_after(0.2):
                while (await sub.receive()).event.type != "probe":
                    pass
                return


async def _cross(where: Cluster, qos: QoS, topic: str, to: str = "b") -> tuple[float, int]:
    """Events per second received on node ``to`` (b: across; a: the same node) from a
    publisher on node a, and how many of ``N`` did not arrive (Realtime drops)."""
    payload = b"x" * PAYLOAD
    sub_reg = AgentRegistration(agent_id=f"sub-{topic}", topics=(f"{topic}.>",), qos=qos)
    async with (
        BridgeClient(where.nodes["a"], AgentRegistration(agent_id="pub"), options=OPTIONS) as pub,
        BridgeClient(where.nodes[to], sub_reg, options=OPTIONS) as sub,
    ):
        await _routed(pub, sub, f"{topic}.probe")
        got = 0
        last_at = 0.0

        async def receive() -> None:
            nonlocal got, last_at
            while True:
                delivery = await sub.receive()
                if delivery.event.type == "bench":
                    got += 1
                    last_at = time.perf_counter()

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            start = time.perf_counter()
            for _ in range(N):
                await pub.publish(f"{topic}.x", Event(type="bench", payload=payload))
            # Until the last arrives (Realtime: until nothing more does for a second); the
            # rate is taken at the last arrival, so this polling does not count.
            with anyio.move_on_after(60):
                while got < N and (qos.lossless or time.perf_counter() - last_at < 1.0):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        elapsed = max(last_at - start, 1e-9)
        return got / elapsed, N - got


async def _raw(url: str) -> float:
    """Messages per second, plain nats-py publish to subscribe, same payload size."""
    payload = b"x" * (PAYLOAD + 60)  # about what an encoded event adds to its payload
    pub = await nats.connect(url)
    sub = await nats.connect(url)
    try:
        done = anyio.Event()
        got = 0

        async def on_msg(_msg: object) -> None:
            nonlocal got
            got += 1
            if got == N:
                done.set()

        await sub.subscribe("raw.x", cb=on_msg, pending_msgs_limit=N + 1)
        await sub.flush()
        start = time.perf_counter()
        for _ in range(N):
            await pub.publish("raw.x", payload)
        await pub.flush()
        with anyio.fail_after(60):
            await done.wait()
        return N / (time.perf_counter() - start)
    finally:
        await pub.close()
        await sub.close()


@asynccontextmanager
async def _node(url: str, name: str) -> AsyncIterator[EventBus]:
    nc = await nats.connect(url)
    try:
        async with EventBus(transport=ClusterTransport(nc, name)) as bus:
            yield bus
    finally:
        await nc.close()


async def _bus_to_bus(url: str) -> float:
    """Events per second from a bus to a Batched subscription on another bus, each with a
    ClusterTransport of its own, in this process."""
    payload = b"x" * PAYLOAD
    async with (
        _node(url, "bench-x") as a,
        _node(url, "bench-y") as b,
        b.subscribe("bb.>", qos=QoS.BATCHED) as sub,
    ):
        with anyio.fail_after(30):
            while True:
                await a.publish("bb.probe", Event(type="probe"))
                with anyio.move_on_after(0.2):
                    await sub.receive()
                    break
        while True:  # probes still in flight
            with anyio.move_on_after(0.3):
                await sub.receive()
                continue
            break
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:

            async def receive() -> None:
                for _ in range(N):
                    await sub.receive()

            tg.start_soon(receive)
            for _ in range(N):
                await a.publish("bb.x", Event(type="bench", payload=payload))
        return N / (time.perf_counter() - start)


async def _local(url: str) -> Figures:
    """The bus's 1:1 rate without a transport, with one and no other node, and with one
    whose other node is interested in other topics only (interleaved, best of)."""
    topic = "bench.orders.created"
    nc = await nats.connect(url)
    other_nc = await nats.connect(url)
    try:
        async with (
            EventBus() as plain,
            EventBus(transport=ClusterTransport(nc, "alone", prefix="_bench.alone")) as alone,
            EventBus(transport=ClusterTransport(nc, "x", prefix="_bench.pair")) as paired,
            EventBus(transport=ClusterTransport(other_nc, "y", prefix="_bench.pair")) as other,
            other.subscribe("unrelated.>"),
        ):
            runs: list[tuple[str, Callable[[], Awaitable[float]]]] = [
                ("local_plain_1to1", lambda: run_on(plain, 1, topic, topic, LOCAL_N)),
                ("local_transport_1to1", lambda: run_on(alone, 1, topic, topic, LOCAL_N)),
                (
                    "local_transport_remote_unrelated_1to1",
                    lambda: run_on(paired, 1, topic, topic, LOCAL_N),
                ),
            ]
            for _, fn in runs:  # warm-up
                await fn()
            best: dict[str, float] = {}
            for i in range(LOCAL_REPEATS):
                # Rotated, so no variant always runs right after another.
                for name, fn in runs[i % 3 :] + runs[: i % 3]:
                    best[name] = max(best.get(name, 0.0), await fn())
    finally:
        await nc.close()
        await other_nc.close()
    figures: Figures = {f"{k}_per_s": round(v) for k, v in best.items()}
    plain_rate = best["local_plain_1to1"]
    alone_ratio = best["local_transport_1to1"] / plain_rate
    paired_ratio = best["local_transport_remote_unrelated_1to1"] / plain_rate
    figures["ratio_local_transport_vs_plain"] = round(alone_ratio, 3)
    figures["ratio_local_remote_unrelated_vs_plain"] = round(paired_ratio, 3)
    figures["met_local_within_5pct"] = min(alone_ratio, paired_ratio) >= 0.95
    return figures


async def events(where: Cluster) -> Figures:
    """The cross-node event figures (see the module)."""
    best = {"cluster": 0.0, "realtime": 0.0, "raw": 0.0, "bus": 0.0, "same": 0.0}
    dropped = N
    cpu: dict[str, float] = {}
    for i in range(REPEATS):
        before = where.cpu_s()
        rate, _ = await _cross(where, QoS.BATCHED, f"batched{i}")
        after = where.cpu_s()
        if rate > best["cluster"]:
            best["cluster"] = rate
            cpu = {k: round(after[k] - before[k], 2) for k in after}
        best["raw"] = max(best["raw"], await _raw(where.url))
        rate, lost = await _cross(where, QoS.REALTIME, f"realtime{i}")
        if rate > best["realtime"]:
            best["realtime"], dropped = rate, lost
        best["bus"] = max(best["bus"], await _bus_to_bus(where.url))
        same, _ = await _cross(where, QoS.BATCHED, f"same{i}", to="a")
        best["same"] = max(best["same"], same)
    return {
        "cluster_events_per_s": round(best["cluster"]),
        "cluster_realtime_events_per_s": round(best["realtime"]),
        "cluster_realtime_dropped": dropped,
        "raw_nats_events_per_s": round(best["raw"]),
        "cluster_bus_events_per_s": round(best["bus"]),
        "same_node_events_per_s": round(best["same"]),
        # Where the best Batched run's time went: CPU seconds per process (the driver runs
        # both agents' bridge clients; node a and b are the loom serve processes).
        **{f"cluster_cpu_s_{k}": v for k, v in cpu.items()},
        "ratio_cluster_vs_raw_nats": round(best["cluster"] / best["raw"], 3),
        "ratio_cluster_realtime_vs_raw_nats": round(best["realtime"] / best["raw"], 3),
        "ratio_cluster_bus_vs_raw_nats": round(best["bus"] / best["raw"], 3),
        "ratio_same_node_vs_raw_nats": round(best["same"] / best["raw"], 3),
        "ratio_cluster_vs_same_node": round(best["cluster"] / best["same"], 3),
        "met_cluster_vs_raw_nats": best["cluster"] / best["raw"] >= 0.5,
        "met_cluster_realtime_vs_raw_nats": best["realtime"] / best["raw"] >= 0.5,
        "events": N,
        "payload_bytes": PAYLOAD,
    }


async def local_overhead(where: Cluster) -> Figures:
    return await _local(where.url)


MEASUREMENTS: list[Callable[[Cluster], Awaitable[Figures]]] = [events, local_overhead]


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with cluster(Path(tmp), ("a", "b")) as where:
            figures: Figures = {}
            for measure in MEASUREMENTS:
                figures.update(await measure(where))
    emit("cluster", figures)


if __name__ == "__main__":
    anyio.run(main)
