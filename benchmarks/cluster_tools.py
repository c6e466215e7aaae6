"""How long does a tool call to an agent on another node take?

On a real ``nats-server`` (the virtualenv's, started on a free port for the run), two Loom
nodes in this process, each its own ``EventBus``, ``AgentRuntime`` and NATS connection, joined
by ``ClusterDirectory`` as ``loom serve --nats URL --node X`` joins them:

* ``cluster_tool_rtt_p50_us``: an agent on node A calls ``ctx.tool("bench.echo", ...)``, a
  capability of an agent on node B (an ``@capability`` returning its argument), one call at a
  time; the round trip as the handler sees it: A's directory choice and registry, the call
  over NATS, B's registry and the capability, the answer back.
* ``raw_nats_request_p50_us``: plain nats-py request/reply of the same payload between two
  connections of this process, the responder a Python callback answering with the data.

Interleaved rounds, ``LOOM_BENCH_CLUSTER_CALLS`` calls each, the p50 of each round and the
best round's kept (the machine is shared). Target: ratio <= 2.5.

Beside them, the same call between agent processes connected through the bridge, with two
real ``loom serve --nats URL --node X`` processes (``benchmarks/_bridge_agents.py``'s
``caller`` on node A, its ``tool-server`` on node B):

* ``cluster_bridged_tool_rtt_p50_us``: caller process -> node A -> NATS -> node B -> provider
  process, and back;
* ``bridged_tool_rtt_same_node_p50_us``: the same two processes' call through node B alone
  (both connected to it): what the bridge costs without the cluster, so the difference is
  what crossing nodes adds.

Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._util import emit
from benchmarks.bridge import Role
from loom import Agent, capability
from loom.cluster import ClusterDirectory, find_nats_server
from loom.runtime import AgentRuntime, Context, Event, EventBus

CALLS = int(os.environ.get("LOOM_BENCH_CLUSTER_CALLS", "2000"))
ROUNDS = int(os.environ.get("LOOM_BENCH_REPEATS", "3"))
TEXT = "x" * 64


@asynccontextmanager
async def nats_server(root: Path) -> AsyncIterator[str]:
    """A ``nats-server -js`` on a free port; its URL once it listens."""
    ports = root / "ports"
    argv = [str(find_nats_server()), "-js", "-sd", str(root / "js"), "-a", "127.0.0.1"]
    argv += ["-p", "-1", "--ports_file_dir", str(ports)]
    ports.mkdir()
    process = await anyio.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    async with process:
        try:
            with anyio.fail_after(15):
                # The ports file is the readiness signal; a file has no event to wait on.
                while not (found := list(ports.glob("*.ports"))):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                while not (text := found[0].read_text()):  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            yield str(json.loads(text)["nats"][0])
        finally:
            process.kill()
            await process.wait()


@capability("bench.echo")
async def echo(text: str) -> str:
    """Return the text."""
    return text


async def loom_rtts(url: str) -> list[float]:
    """One round of ctx.tool calls from an agent on node A to an agent on node B."""
    rtts: list[float] = []
    done = anyio.Event()

    async def caller(ctx: Context, topic: str, event: Event) -> None:
        for _ in range(CALLS):
            start = time.perf_counter()
            await ctx.tool("bench.echo", {"text": TEXT})
            rtts.append(time.perf_counter() - start)
        done.set()

    client_a = await nats.connect(url, name="bench-a")
    client_b = await nats.connect(url, name="bench-b")
    try:
        async with (
            EventBus() as bus_a,
            EventBus() as bus_b,
            AgentRuntime(bus_a, node="a") as runtime_a,
            AgentRuntime(bus_b, node="b") as runtime_b,
            ClusterDirectory(runtime_a, client_a, "a"),
            ClusterDirectory(runtime_b, client_b, "b"),
        ):
            await runtime_b.start(Agent("echoer", capabilities=[echo]))
            with anyio.fail_after(10):
                while not runtime_a.directory.by_capability("bench.echo"):
                    await runtime_a.directory.wait_changed()
            await runtime_a.start(Agent("caller", topics=["bench.go"], on_event=caller))
            await bus_a.publish("bench.go", Event(type="go"))
            with anyio.fail_after(300):
                await done.wait()
    finally:
        await client_a.close()
        await client_b.close()
    return rtts


async def raw_rtts(url: str) -> list[float]:
    """One round of plain nats-py request/reply, a Python responder."""
    requester: Client = await nats.connect(url, name="raw-requester")
    responder: Client = await nats.connect(url, name="raw-responder")
    payload = ('{"text": "' + TEXT + '"}').encode()

    async def answer(msg: Msg) -> None:
        await msg.respond(msg.data)

    try:
        await responder.subscribe("bench.raw", cb=answer)
        await responder.flush()
        rtts: list[float] = []
        for _ in range(CALLS):
            start = time.perf_counter()
            await requester.request("bench.raw", payload, timeout=5)
            rtts.append(time.perf_counter() - start)
        return rtts
    finally:
        await requester.close()
        await responder.close()


class Node:
    """``loom serve --nats URL --node NAME`` on a free port, in its own process."""

    def __init__(self, root: Path, url: str, name: str) -> None:
        cmd = [sys.executable, "-m", "loom.cli", "serve", "--port", "0"]
        cmd += ["--data-dir", str(root / f"data-{name}"), "--nats", url, "--node", name]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        self.log: list[str] = []
        for line in self.proc.stdout:
            self.log.append(line)
            if (match := re.search(r"listening on (\S+:\d+)", line)) is not None:
                self.address = match.group(1)
                break
        else:
            raise RuntimeError("loom serve ended before it listened:\n" + "".join(self.log))
        # Its log must keep flowing, or a full pipe would stall the server.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _calls(address: str) -> float:
    caller = Role("caller", address, str(CALLS), "bench.echo", '{"x": 1}')
    try:
        caller.expect("ready")
        return float(caller.expect("result")["p50_us"])
    finally:
        caller.close()


def bridged_rtts(root: Path, url: str) -> tuple[float, float]:
    """(through node A to the provider on node B, through node B alone), p50 in us."""
    a = Node(root, url, "a")
    b = Node(root, url, "b")
    provider = None
    try:
        provider = Role("tool-server", b.address)
        provider.expect("ready")
        deadline = time.monotonic() + 30
        while True:  # node A lists the provider of node B once B has written it
            shown = subprocess.run(
                [sys.executable, "-m", "loom.cli", "tools", "-a", a.address],
                capture_output=True,
                text=True,
                check=False,
            )
            if "bench.echo" in shown.stdout:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("node A never listed bench.echo of node B")
        return _calls(a.address), _calls(b.address)
    finally:
        if provider is not None:
            provider.close()
        a.close()
        b.close()


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="loom-bench-cluster-") as tmp:
        async with nats_server(Path(tmp)) as url:
            loom_p50: list[float] = []
            raw_p50: list[float] = []
            for _ in range(ROUNDS):
                raw_p50.append(statistics.median(await raw_rtts(url)))
                loom_p50.append(statistics.median(await loom_rtts(url)))
            across, same = await anyio.to_thread.run_sync(bridged_rtts, Path(tmp), url)
    loom_us = min(loom_p50) * 1e6
    raw_us = min(raw_p50) * 1e6
    emit(
        "cluster_tools",
        {
            "cluster_tool_rtt_p50_us": round(loom_us, 1),
            "raw_nats_request_p50_us": round(raw_us, 1),
            "ratio": round(loom_us / raw_us, 2),
            "target_ratio_max": 2.5,
            "cluster_bridged_tool_rtt_p50_us": round(across, 1),
            "bridged_tool_rtt_same_node_p50_us": round(same, 1),
            "calls": CALLS,
            "rounds": ROUNDS,
        },
    )


if __name__ == "__main__":
    anyio.run(main)
