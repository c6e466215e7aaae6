"""The remote agents of benchmarks/bridge.py, one role per process, driven over stdin/stdout.

Usage: ``python benchmarks/_bridge_agents.py ROLE [ADDRESS ARGS...]``. Every role prints JSON
lines on stdout: ``{"ready": true}`` once connected (the driver waits for it; no sleeps),
then ``{"result": {...}}`` with its measurements. A role that has to stay up (a publisher whose
events are still in flight, a tool server) serves until its stdin closes.

Roles:

* ``subscriber ADDRESS N TOPIC BATCH``: an ``Agent`` subscribed to TOPIC, handling each event
  (it reads the payload); reports ``end``, the ``time.monotonic()`` at which the N-th event
  was handled. ``time.monotonic`` is one clock for every process of the machine, so the
  driver can subtract the publisher's ``start`` from it. With ``$LOOM_BENCH_TRACE``
  (``ENDPOINT RATIO``) it traces, exporting to ENDPOINT.
* ``publisher ADDRESS N TOPIC BATCH``: a ``BridgeClient`` (what ``ctx.emit`` calls) that
  publishes N events of 32 bytes as fast as the server's credit lets it; reports ``start``.
* ``tool-server ADDRESS``: an ``Agent`` offering the capability ``bench.echo``.
* ``runtime-server``: a bridge server (``BridgeServer`` on an ``AgentRuntime``, as ``loom
  serve`` builds it) whose runtime registers ``bench.echo`` as a tool of its own; it reports
  ``{"ready": true, "address": ...}``. Used for the one-hop figure when ``loom serve``
  registers no runtime tool to call.
* ``caller ADDRESS CALLS TOOL ARGS_JSON``: sequential tool calls through the server
  (``BridgeClient.call_tool``, what ``ctx.tool`` calls: a ``call`` frame on the agent's open
  stream, the server granting it); reports ``p50_us`` and ``p99_us``.

BATCH is ``1`` for batching on (the client asks for batches of up to 256 events) and ``0``
for one event per gRPC message both ways (``max_batch_events=1``).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import anyio
from opentelemetry.sdk.trace import TracerProvider

from loom import Agent, Context, Event, capability, serve_agent, tracer_provider
from loom.bridge import AgentRegistration, BridgeClient, ClientOptions


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def _until_stdin_closes() -> None:
    fd = sys.stdin.fileno()
    while True:
        await anyio.wait_readable(fd)
        if not os.read(fd, 4096):
            return


def _traced() -> TracerProvider | None:
    """``$LOOM_BENCH_TRACE`` (``ENDPOINT RATIO``, set by the driver for its tracing lines): a
    tracer provider as ``Agent.run()`` builds it (``sdk/_telemetry.py``: Loom's sampler, the
    span pipe to an exporter process); else ``None``, nothing traced."""
    setting = os.environ.get("LOOM_BENCH_TRACE")
    if not setting:
        return None
    endpoint, ratio = setting.split()
    provider = tracer_provider(endpoint, ratio=float(ratio))
    # Its exporter process's start-up (imports) done before the run, not within it.
    assert provider.loom_span_pipe.wait_started(30)  # type: ignore[attr-defined]
    return provider


def _options(batch: bool) -> ClientOptions:
    # Room for a whole batch in flight both ways; unbatched: one event per message.
    size = 256 if batch else 1
    return ClientOptions(
        max_batch_events=size, inbound_buffer=4096, outbound_buffer=4096, connect_timeout=20
    )


async def subscriber(address: str, n: int, topic: str, batch: bool) -> None:
    done = anyio.Event()
    seen = {"count": 0, "bytes": 0}
    end = 0.0

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        nonlocal end
        seen["count"] += 1
        seen["bytes"] += len(event.payload)
        if seen["count"] == n:
            end = time.monotonic()
            done.set()

    agent = Agent(f"bench-sub-{os.getpid()}", topics=[topic], on_event=on_event, mailbox_size=4096)
    provider = _traced()
    serve = functools.partial(
        serve_agent, agent, address, options=_options(batch), tracer_provider=provider
    )
    async with anyio.create_task_group() as tg:
        await tg.start(serve)
        cpu0 = time.process_time()
        _say(ready=True)
        await done.wait()
        tg.cancel_scope.cancel()
    if provider is not None:
        provider.shutdown()
    assert seen["bytes"] == 32 * n
    _say(result={"end": end, "count": seen["count"], "cpu_s": time.process_time() - cpu0})


async def publisher(address: str, n: int, topic: str, batch: bool) -> None:
    registration = AgentRegistration(agent_id=f"bench-pub-{os.getpid()}")
    # Built before the clock starts, as the raw baseline's message is.
    events = [Event(type="bench", payload=b"x" * 32) for _ in range(n)]
    async with BridgeClient(address, registration, options=_options(batch)) as client:
        _say(ready=True)
        start = time.monotonic()
        publish = client.publish
        for event in events:
            await publish(topic, event)
        _say(result={"start": start, "queued_s": time.monotonic() - start})
        await _until_stdin_closes()  # the events may still be on their way: stay connected


@capability("bench.echo")
async def echo(x: int) -> int:
    """Return x."""
    return x


async def tool_server(address: str) -> None:
    agent = Agent(f"bench-tools-{os.getpid()}", capabilities=[echo])
    async with anyio.create_task_group() as tg:
        await tg.start(serve_agent, agent, address)
        _say(ready=True)
        await _until_stdin_closes()
        tg.cancel_scope.cancel()


async def runtime_server() -> None:
    from loom.bridge import BridgeServer
    from loom.runtime import AgentRuntime, EventBus
    from loom.runtime.tools import ToolRegistry

    tools = ToolRegistry()
    tools.register(echo)
    async with (
        EventBus() as bus,
        AgentRuntime(bus, tools=tools) as runtime,
        BridgeServer(runtime, port=0) as server,
    ):
        _say(ready=True, address=server.address)
        await _until_stdin_closes()


async def caller(address: str, calls: int, tool: str, arguments: str) -> None:
    registration = AgentRegistration(agent_id=f"bench-caller-{os.getpid()}")
    async with BridgeClient(address, registration) as client:
        _say(ready=True)
        for _ in range(min(200, calls)):  # warm-up
            await client.call_tool(tool, arguments, timeout=10)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await client.call_tool(tool, arguments, timeout=10)
            times.append(time.perf_counter() - t0)
    times.sort()
    _say(
        result={
            "p50_us": times[len(times) // 2] * 1e6,
            "p99_us": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6,
        }
    )


def main(argv: list[str]) -> None:
    match argv:
        case ["subscriber", address, n, topic, batch]:
            anyio.run(subscriber, address, int(n), topic, batch == "1")
        case ["publisher", address, n, topic, batch]:
            anyio.run(publisher, address, int(n), topic, batch == "1")
        case ["tool-server", address]:
            anyio.run(tool_server, address)
        case ["runtime-server"]:
            anyio.run(runtime_server)
        case ["caller", address, calls, tool, arguments]:
            anyio.run(caller, address, int(calls), tool, arguments)
        case _:
            raise SystemExit(f"usage: see the module docs; not {argv!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
