"""How fast is the gRPC bridge, next to plain grpc.aio doing the least it could?

Everything runs in separate processes, as in production: ``loom serve`` (a subprocess), the
remote agents (``benchmarks/_bridge_agents.py``, one process per role) and the raw grpc.aio
echo server (``benchmarks/_raw_grpc.py``); this driver starts them, waits for each to say it
is ready, and collects what they measured. Figures (one JSON line):

* ``stream_events_per_s``: events from a remote publisher (``BridgeClient.publish``, what
  ``ctx.emit`` calls) through the server to a remote subscriber ``Agent`` (handled by
  ``on_event``), batching on; from the first publish to the last event handled.
* ``raw_grpc_batched_events_per_s``: a plain grpc.aio bidirectional echo carrying 100
  serialized events per message (the client parses every event that comes back).
* ``stream_unbatched_events_per_s`` / ``raw_grpc_unbatched_msgs_per_s``: one event per gRPC
  message both ways.
* ``tool_rtt_p50_us`` / ``tool_rtt_p99_us``: a remote agent calling a tool another remote agent
  declared (two hops: caller -> server -> provider and back).
* ``runtime_tool_rtt_p50_us``: a remote agent calling a tool of the server's own runtime (one
  hop).
* ``raw_unary_p50_us``: a plain grpc.aio unary round trip of a small message.
* ``traced_1_stream_events_per_s`` / ``traced_001_stream_events_per_s``: the batched stream
  through a ``loom serve`` tracing at 1.0 / 0.01 (``--otlp-endpoint``, ``--trace-sample``) to
  a subscriber tracing alike, both exporting to an OTLP receiver in another process
  (``benchmarks/_otlp_sink.py``) through their exporter processes (``loom.tracer_provider``);
  ``tracing_cost_stream_at_1`` / ``_at_001``: the share of
  ``stream_events_per_s`` (same run) that tracing costs.
* ``metered_stream_events_per_s`` / ``metrics_off_stream_events_per_s``: the batched stream
  through a ``loom serve`` with its metrics on (exported over OTLP to the receiver every
  second, ``/metrics`` scraped every 0.1 s while the events flow, far more often than
  Prometheus's 15 s) and through one with ``--no-metrics`` (no meters at all), interleaved in
  every repeat (twice each, ABBA); ``metrics_cost_stream``: 1 - on/off (target <= 0.10,
  ``met_metrics_cost``).
  ``metered_server_cpu_us_per_event`` / ``metrics_off_server_cpu_us_per_event``: the server's
  CPU per event from the publisher's start to the last event handled, steadier than a rate on
  a shared machine; ``metrics_cpu_cost_stream``: on/off - 1.
* ``python_floor_batched_events_per_s`` / ``python_floor_unbatched_events_per_s``: a second
  baseline, the least any Python bridge pays (``benchmarks/_python_floor.py``): publisher,
  middle server and subscriber processes over plain grpc.aio, one Struct and one protobuf
  message per event and hop, and nothing else (no routing, envelope, flow control or acks).
  The stream targets are ratios to the raw echo; this says how much of that a Python bridge
  can reach at all on this machine.

Each figure is the best of ``LOOM_BENCH_REPEATS`` runs (the machine is shared and noisy), the
Loom and raw runs interleaved. ``LOOM_BENCH_PROFILE=path`` runs the server under cProfile and
writes its stats there. See docs/performance.md for the targets and the latest figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import _raw_grpc as raw
from benchmarks._python_floor import floor_events_per_s
from benchmarks._util import emit
from benchmarks.bus import _cpu_s, otlp_sink

EVENTS = int(os.environ.get("LOOM_BENCH_BRIDGE_EVENTS", "50000"))
UNBATCHED = int(os.environ.get("LOOM_BENCH_BRIDGE_UNBATCHED", "10000"))
CALLS = int(os.environ.get("LOOM_BENCH_BRIDGE_CALLS", "2000"))
REPEATS = int(os.environ.get("LOOM_BENCH_REPEATS", "3"))
PROFILE = os.environ.get("LOOM_BENCH_PROFILE", "")
AGENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bridge_agents.py")
TIMEOUT = 120.0

# The one-hop figure calls ``bench.echo`` as a tool of the server's own runtime: cheap and
# side-effect free, so the figure is the bridge's cost, not the tool's. ``loom serve``
# registers no such tool, so that figure comes from a server process built the same way
# (BridgeServer on an AgentRuntime) whose runtime has it (``_bridge_agents.py runtime-server``).
RUNTIME_TOOL = "bench.echo"

# The traced server hands its spans to its exporter process every 0.2 s (the SDK's variable,
# which Loom reads for its span pipe; 0.5 s by default, the subscriber's), so that their
# exports fall within the measured runs, as they do in a process that runs for days.
TRACE_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "200"}

# The metered server exports its metrics every second (60 s by default) and is scraped every
# SCRAPE_EVERY_S during its runs, as in benchmarks/bus.py: the most metrics would ever cost.
METRICS_ENV = {"OTEL_METRIC_EXPORT_INTERVAL": "1000"}
SCRAPE_EVERY_S = 0.1


def _readline(proc: subprocess.Popen[str], deadline: float) -> str:
    assert proc.stdout is not None
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
        raise TimeoutError(f"{proc.args!r} said nothing in time")
    return proc.stdout.readline()


class Role:
    """One process of ``_bridge_agents.py`` (``env``: added to this one's environment)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, AGENTS, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=None if env is None else {**os.environ, **env},
        )

    def expect(self, key: str) -> Any:
        deadline = time.monotonic() + TIMEOUT
        while True:
            line = _readline(self.proc, deadline)
            if not line:
                raise RuntimeError(f"{self.proc.args!r} ended (code {self.proc.wait()})")
            if line.startswith("{"):
                message = json.loads(line)
                if key in message:
                    return message[key]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Server:
    """``loom serve`` on a free port, in its own process; ``trace``: ``(endpoint, ratio)``,
    exporting its spans there (``--otlp-endpoint``, ``--trace-sample``); ``metrics``: ``None``
    for ``--no-metrics``, else where its metrics go over OTLP (``""``: nowhere)."""

    def __init__(
        self, data_dir: str, trace: tuple[str, float] | None = None, metrics: str | None = ""
    ) -> None:
        cmd = [sys.executable, "-m", "loom.cli", "serve", "--port", "0", "--data-dir", data_dir]
        env = None
        if metrics is None:
            cmd.append("--no-metrics")
        elif metrics:
            env = {**os.environ, **METRICS_ENV, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": metrics}
        if trace is not None:
            cmd += ["--otlp-endpoint", trace[0], "--trace-sample", str(trace[1])]
            env = {**os.environ, **TRACE_ENV}
        elif PROFILE and metrics == "":
            # The stats are written when the server exits (on SIGTERM, cleanly).
            cmd = [sys.executable, "-m", "cProfile", "-o", PROFILE, *cmd[1:]]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.log: list[str] = []
        self.address = self.url = ""
        self._up = threading.Event()
        # Its log is read from the start by a thread and must keep flowing, or a full pipe
        # would stall the server. (Not select() and readline(): two lines read at once leave
        # the second in the file's buffer, where select() does not see it.)
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._up.wait(TIMEOUT) or not self.url:
            self.close()
            raise RuntimeError("loom serve did not say where it listens:\n" + "".join(self.log))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            if match := re.search(r"listening on (\S+:\d+)", line):
                self.address = match.group(1)
            if match := re.search(r"dashboard on (\S+/)", line):  # said after the address
                self.url = match.group(1)
                self._up.set()
        self._up.set()  # it ended

    def cpu_s(self) -> float:
        """Its CPU time so far (user and system)."""
        return _cpu_s(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def stream_rate(
    address: str, n: int, batch: bool, run: int, trace: tuple[str, float] | None = None
) -> float:
    """Events per second from a remote publisher to a remote subscriber; ``trace``: the
    subscriber traces, exporting to ``trace[0]`` at the ratio ``trace[1]``."""
    return stream_rate_cpu(address, n, batch, run, trace)[0]


def stream_rate_cpu(
    address: str,
    n: int,
    batch: bool,
    run: int,
    trace: tuple[str, float] | None = None,
    cpu_s: Callable[[], float] = lambda: 0.0,
) -> tuple[float, float]:
    """:func:`stream_rate`, and how much ``cpu_s()`` (a server's CPU time) grew from the
    publisher's start to the subscriber's last event (the roles' start-up left out)."""
    flag = "1" if batch else "0"
    topic = f"bench.stream.r{run}"
    env = None if trace is None else {**TRACE_ENV, "LOOM_BENCH_TRACE": f"{trace[0]} {trace[1]}"}
    sub = Role("subscriber", address, str(n), topic, flag, env=env)
    pub = None
    try:
        sub.expect("ready")
        pub = Role("publisher", address, str(n), topic, flag)
        pub.expect("ready")
        cpu = cpu_s()
        start = pub.expect("result")["start"]
        end = sub.expect("result")["end"]
        cpu = cpu_s() - cpu
    finally:
        if pub is not None:
            pub.close()
        sub.close()
    return float(n / (end - start)), cpu


@contextlib.contextmanager
def scraping(url: str | None) -> Iterator[list[int]]:
    """GET ``url``'s ``/metrics`` every ``SCRAPE_EVERY_S`` from a thread while the block runs,
    as Prometheus would (``None``: nothing); the HTTP statuses it got."""
    statuses: list[int] = []
    done = threading.Event()

    def scrape() -> None:
        while url is not None and not done.is_set():
            statuses.append(_get_status(url + "metrics"))
            done.wait(SCRAPE_EVERY_S)

    thread = threading.Thread(target=scrape, daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        done.set()
        thread.join()


def _get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def metrics_rate(server: Server, run: int, *, scrape: bool) -> tuple[float, float]:
    """(events per second, the server's CPU in µs per event) of the batched stream through
    ``server``; ``scrape``: its ``/metrics`` scraped meanwhile (each scrape must succeed)."""
    with scraping(server.url if scrape else None) as statuses:
        rate, cpu = stream_rate_cpu(server.address, EVENTS, True, run, cpu_s=server.cpu_s)
    if scrape and (not statuses or set(statuses) != {200}):
        raise RuntimeError(f"the metered server's /metrics answered {sorted(set(statuses))}")
    return rate, cpu * 1e6 / EVENTS


def _calls(address: str) -> dict[str, float]:
    caller = Role("caller", address, str(CALLS), "bench.echo", '{"x": 1}')
    try:
        caller.expect("ready")
        result: dict[str, float] = caller.expect("result")
    finally:
        caller.close()
    return result


def tool_rtts(address: str) -> tuple[dict[str, float], dict[str, float]]:
    """(a remote agent's tool through ``address``, a runtime tool of a server's own)."""
    provider = Role("tool-server", address)
    try:
        provider.expect("ready")
        two_hops = _calls(address)
    finally:
        provider.close()
    server = Role("runtime-server")
    try:
        one_hop = _calls(server.expect("address"))
    finally:
        server.close()
    return two_hops, one_hop


def main() -> None:
    raw_proc, raw_port = raw.start_server()
    figures: dict[str, float] = {}

    def best(key: str, value: float, lower: bool = False) -> None:
        old = figures.get(key)
        if old is None or (value < old if lower else value > old):
            figures[key] = value

    with (
        tempfile.TemporaryDirectory(prefix="loom-bench-") as data_dir,
        tempfile.TemporaryDirectory(prefix="loom-bench-") as dir_1,
        tempfile.TemporaryDirectory(prefix="loom-bench-") as dir_001,
        tempfile.TemporaryDirectory(prefix="loom-bench-") as dir_metered,
        tempfile.TemporaryDirectory(prefix="loom-bench-") as dir_unmetered,
        otlp_sink() as sink,
    ):
        server = Server(data_dir)
        # The tracing lines: a server and a subscriber tracing at 1.0 and at 0.01, each
        # measured next to the untraced stream in every repeat. (The publisher is a bare
        # client: the roots are the server's relays, as for any client that does not trace.)
        traced = {1.0: Server(dir_1, (sink, 1.0)), 0.01: Server(dir_001, (sink, 0.01))}
        # The metrics line: the same stream through a server with its metrics on (exported
        # and scraped while the events flow) and one with --no-metrics, in every repeat.
        metered = Server(dir_metered, metrics=sink)
        unmetered = Server(dir_unmetered, metrics=None)
        if _get_status(unmetered.url + "metrics") != 404:
            raise RuntimeError("loom serve --no-metrics still serves /metrics")
        try:
            for run in range(REPEATS):
                best(
                    "raw_grpc_batched_events_per_s",
                    asyncio.run(raw.stream_events_per_s(raw_port, 100, EVENTS)),
                )
                best("stream_events_per_s", stream_rate(server.address, EVENTS, True, run))
                for ratio, name in ((0.01, "traced_001"), (1.0, "traced_1")):
                    best(
                        f"{name}_stream_events_per_s",
                        stream_rate(traced[ratio].address, EVENTS, True, run, trace=(sink, ratio)),
                    )
                # Interleaved, twice each per repeat in the order on, off, off, on (then off,
                # on, on, off): neither side always runs on a machine the other has just
                # warmed or loaded, and each gets twice the samples of the other lines (its
                # difference is small next to this machine's noise).
                sides = [("metered", metered, True), ("metrics_off", unmetered, False)]
                sides = sides + sides[::-1] if run % 2 == 0 else sides[::-1] + sides
                for name, one, scrape in sides:
                    rate, cpu_us = metrics_rate(one, run, scrape=scrape)
                    best(f"{name}_stream_events_per_s", rate)
                    best(f"{name}_server_cpu_us_per_event", cpu_us, True)
                best(
                    "raw_grpc_unbatched_msgs_per_s",
                    asyncio.run(raw.stream_events_per_s(raw_port, 1, UNBATCHED)),
                )
                best(
                    "stream_unbatched_events_per_s",
                    stream_rate(server.address, UNBATCHED, False, run + REPEATS),
                )
                best("python_floor_batched_events_per_s", floor_events_per_s(100, EVENTS))
                best("python_floor_unbatched_events_per_s", floor_events_per_s(1, UNBATCHED))
                best("raw_unary_p50_us", asyncio.run(raw.unary_p50_us(raw_port, CALLS)), True)
                two_hops, one_hop = tool_rtts(server.address)
                best("tool_rtt_p50_us", two_hops["p50_us"], True)
                best("tool_rtt_p99_us", two_hops["p99_us"], True)
                best("runtime_tool_rtt_p50_us", one_hop["p50_us"], True)
        finally:
            server.close()
            for one in (*traced.values(), metered, unmetered):
                one.close()
            raw.stop_server(raw_proc)

    ratios = {
        "stream_vs_raw_batched": figures["stream_events_per_s"]
        / figures["raw_grpc_batched_events_per_s"],
        "unbatched_vs_raw": figures["stream_unbatched_events_per_s"]
        / figures["raw_grpc_unbatched_msgs_per_s"],
        "runtime_tool_vs_raw_unary": figures["runtime_tool_rtt_p50_us"]
        / figures["raw_unary_p50_us"],
        "tool_vs_raw_unary": figures["tool_rtt_p50_us"] / figures["raw_unary_p50_us"],
        "python_floor_batched_vs_raw_batched": figures["python_floor_batched_events_per_s"]
        / figures["raw_grpc_batched_events_per_s"],
        "python_floor_unbatched_vs_raw": figures["python_floor_unbatched_events_per_s"]
        / figures["raw_grpc_unbatched_msgs_per_s"],
        "stream_vs_python_floor_batched": figures["stream_events_per_s"]
        / figures["python_floor_batched_events_per_s"],
        "unbatched_vs_python_floor": figures["stream_unbatched_events_per_s"]
        / figures["python_floor_unbatched_events_per_s"],
    }
    # The share of the stream's throughput that tracing costs (server and subscriber).
    costs = {
        f"tracing_cost_stream_at_{name}": 1
        - figures[f"traced_{name}_stream_events_per_s"] / figures["stream_events_per_s"]
        for name in ("1", "001")
    }
    # The share of the stream's throughput that the server's metrics cost (on against off).
    costs["metrics_cost_stream"] = (
        1 - figures["metered_stream_events_per_s"] / figures["metrics_off_stream_events_per_s"]
    )
    costs["metrics_cpu_cost_stream"] = (
        figures["metered_server_cpu_us_per_event"] / figures["metrics_off_server_cpu_us_per_event"]
        - 1
    )
    targets = {
        "stream_vs_raw_batched": ratios["stream_vs_raw_batched"] >= 0.5,
        "unbatched_vs_raw": ratios["unbatched_vs_raw"] >= 0.8,
        "runtime_tool_vs_raw_unary": ratios["runtime_tool_vs_raw_unary"] <= 1.2,
        "tool_vs_raw_unary": ratios["tool_vs_raw_unary"] <= 2.4,
        "metrics_cost": costs["metrics_cost_stream"] <= 0.10,
    }
    emit(
        "bridge",
        {
            **{k: round(v, 1) for k, v in figures.items()},
            **{f"ratio_{k}": round(v, 3) for k, v in ratios.items()},
            **{k: round(v, 3) for k, v in costs.items()},
            **{f"met_{k}": v for k, v in targets.items()},
            "events": EVENTS,
            "unbatched_events": UNBATCHED,
            "tool_calls": CALLS,
            "runtime_tool": f"{RUNTIME_TOOL} (runtime of _bridge_agents.py runtime-server)",
        },
    )


if __name__ == "__main__":
    main()
