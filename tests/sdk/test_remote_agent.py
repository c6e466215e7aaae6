"""Remote mode: agents running as real subprocesses (``Agent.run``), connected to a real server
started here on 127.0.0.1:0. Readiness is awaited on lifecycle events, events the agents emit
and lines they print; never on sleeps."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from loom import Agent, Context, capability
from loom.runtime import AgentStatus, Event, Subscription
from loom.runtime.tools import InvalidToolArguments, ToolTimeout, validates_itself

from ..bridge._client_support import Hosting, hosting, next_of
from ..bridge._server_harness import wait_until

pytestmark = pytest.mark.anyio

# ---- the issue's example, verbatim, plus the call that runs it remotely

EXAMPLE = """
from loom import Agent, Context, capability


@capability("text.upper", description="Upper-case a text")
async def upper(text: str) -> str:
    return text.upper()


async def on_event(ctx: Context, topic: str, event) -> None:
    result = await ctx.tool("text.upper", {"text": event.payload.decode()})
    await ctx.emit("output.upper", payload=result.encode())


agent = Agent("upperer", topics=["input.*"], capabilities=[upper], on_event=on_event)

if __name__ == "__main__":
    print("ended", agent.run().value, flush=True)  # address from LOOM_BRIDGE_ADDR
"""

# ---- an agent that exercises every ContextHost operation across the bridge

REMOTE = """
import sys
import time

import anyio

from loom import Agent, Context, SupervisionPolicy, capability
from loom.bridge._client import ClientOptions
from loom.bridge._reconnect import Backoff
from loom.runtime.tools import ToolTimeout

POLICY = SupervisionPolicy(poison_after=1, backoff_initial_s=0.01, backoff_max_s=0.05)
OPTIONS = ClientOptions(
    connect_timeout=10, heartbeat_interval=0.2, heartbeat_timeout=3,
    backoff=Backoff(initial=0.05, maximum=0.3),
)


async def kid(ctx: Context, topic: str, event) -> None:
    await ctx.emit("output.kid", b"kid:" + event.payload, type="kid")


class Remote(Agent):
    id = "remote"
    topics = ("input.*", "probe.*", "ask.*")

    def __init__(self) -> None:
        super().__init__(policy=POLICY)
        self.handled = 0

    @capability("remote.upper")
    async def upper(self, text: str) -> str:
        return text.upper()

    @capability("remote.hang")
    async def hang(self) -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            print("CANCELLED remote.hang", flush=True)
            raise

    async def on_start(self, ctx: Context) -> None:
        await ctx.subscribe("extra.*")
        await ctx.emit("output.ready", type="ready")

    async def on_event(self, ctx: Context, topic: str, event) -> None:
        self.handled += 1
        text = event.payload.decode()
        if event.type == "tick":
            await ctx.emit("output.tick", f"tick after {self.handled}", type="tick")
        elif topic == "input.x":
            result = await ctx.tool("remote.upper", {"text": text})
            await ctx.emit("output.upper", result, type="upper")
        elif topic.startswith("extra."):
            await ctx.emit("output.extra", text, type="extra")
        elif topic == "probe.tool":
            result = await ctx.tool("local.reverse", {"text": text}, timeout=5)
            await ctx.emit("output.tool", result, type="tool")
        elif topic == "probe.request":
            reply = await ctx.request("svc.echo", text, timeout=5)
            await ctx.emit("output.request", reply.payload, type="request")
        elif topic == "probe.timeout":
            start = time.monotonic()
            try:
                await ctx.tool("local.hang", {}, timeout=0.3)
            except ToolTimeout as exc:
                elapsed = time.monotonic() - start
                text = f"{type(exc).__name__} {elapsed:.3f}"
                await ctx.emit("output.timeout", text, type="timeout")
        elif topic == "probe.spawn":
            child = await ctx.spawn(Agent("child", topics=["kid.in"], on_event=kid))
            await ctx.emit("output.spawn", child, type="spawn")
        elif topic == "probe.schedule":
            ctx.schedule("tick", delay=0.01)
        elif topic == "probe.count":
            await ctx.emit("output.count", str(self.handled), type="count")
        elif topic == "probe.crash":
            raise RuntimeError("crash on purpose")
        elif topic.startswith("ask."):
            await ctx.reply(event, text[::-1])


if __name__ == "__main__":
    print("ended", Remote().run(options=OPTIONS).value, flush=True)
"""


class Lines:
    """What a subprocess prints, read as it comes."""

    def __init__(self, process: Process) -> None:
        assert process.stdout is not None
        self._text = TextReceiveStream(process.stdout)
        self.seen = ""

    async def wait_for(self, text: str, timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while text not in self.seen:
                self.seen += await self._text.receive()


@asynccontextmanager
async def agent_process(
    tmp_path: Path, source: str, host: Hosting
) -> AsyncIterator[tuple[Process, Lines]]:
    script = tmp_path / "agent.py"
    script.write_text(source)
    env = {**os.environ, "LOOM_BRIDGE_ADDR": host.address, "PYTHONUNBUFFERED": "1"}
    env.pop("LOOM_TOKEN", None)
    process = await anyio.open_process([sys.executable, str(script)], env=env, stderr=None)
    try:
        yield process, Lines(process)
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def stop(process: Process, lines: Lines) -> None:
    """SIGTERM: the agent stops, disconnects cleanly and exits 0."""
    process.send_signal(signal.SIGTERM)
    await lines.wait_for("ended stopped")
    with anyio.fail_after(10):
        assert await process.wait() == 0


def _status(host: Hosting, agent_id: str) -> AgentStatus | None:
    info = host.runtime.directory.get(agent_id)
    return None if info is None else info.status


def _patterns(host: Hosting, agent_id: str) -> tuple[str, ...]:
    info = host.runtime.directory.get(agent_id)
    return () if info is None else info.patterns


async def payload_of(sub: Subscription, *types: str) -> bytes:
    return (await next_of(sub, *types, timeout=10)).payload


# ------------------------------------------------------------------ the example


async def test_the_issues_example_runs_as_a_subprocess(tmp_path: Path) -> None:
    async with hosting() as host:
        bus = host.bus
        async with (
            bus.subscribe("loom.lifecycle.upperer") as life,
            bus.subscribe("output.upper") as out,
            agent_process(tmp_path, EXAMPLE, host) as (process, lines),
        ):
            await next_of(life, "agent.running", timeout=15)
            await bus.publish("input.x", Event(payload=b"hello"))
            with anyio.fail_after(10):
                delivery = await out.receive()
            assert delivery.topic == "output.upper"
            assert delivery.event.payload == b"HELLO"
            assert delivery.event.source == "upperer"
            assert delivery.event.envelope.hop == 1
            info = host.runtime.directory.get("upperer")
            assert info is not None
            assert info.remote
            assert info.capabilities == ("text.upper",)
            await stop(process, lines)
            await next_of(life, "agent.disconnected")


# ------------------------------------------------------------------ every Context operation


class Local(Agent):
    """The in-process side: a capability the remote agent calls, an echo it requests, and
    handlers that call the remote agent's capability and request it in turn."""

    def __init__(self) -> None:
        super().__init__("local", topics=["svc.echo", "call.*"])
        self.hang_cancelled = anyio.Event()

    @capability("local.reverse")
    async def reverse(self, text: str) -> str:
        return text[::-1]

    @capability("local.hang")
    async def hang(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            self.hang_cancelled.set()

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
        if topic == "svc.echo":
            await ctx.reply(event, b"echo:" + event.payload)
        elif topic == "call.upper":
            result = await ctx.tool("remote.upper", {"text": event.payload.decode()}, timeout=5)
            await ctx.emit("result.upper", result, type="result")
        elif topic == "call.ask":
            reply = await ctx.request("ask.remote", event.payload, timeout=5)
            await ctx.emit("result.ask", reply.payload, type="result")


async def test_a_remote_agent_uses_every_context_operation(tmp_path: Path) -> None:
    async with hosting() as host:
        bus, rt = host.bus, host.runtime
        local = Local()
        await rt.start(local)
        async with (
            bus.subscribe("output.>") as out,
            bus.subscribe("result.>") as results,
            bus.subscribe("loom.deadletter.remote") as letters,
            agent_process(tmp_path, REMOTE, host) as (process, lines),
        ):
            await next_of(out, "ready", timeout=15)

            # The remote agent's own capability, called through the server.
            await bus.publish("input.x", Event(payload=b"abc"))
            assert await payload_of(out, "upper") == b"ABC"
            # A subscription made in on_start (dynamic, on the stream).
            await bus.publish("extra.y", Event(payload=b"more"))
            assert await payload_of(out, "extra") == b"more"
            # ctx.tool of an in-process capability from the remote agent...
            await bus.publish("probe.tool", Event(payload=b"abc"))
            assert await payload_of(out, "tool") == b"cba"
            # ... and of the remote capability from an in-process agent.
            await bus.publish("call.upper", Event(payload=b"xyz"))
            assert await payload_of(results, "result") == b"XYZ"
            # The remote capability checks its arguments itself and says so, so the server
            # skips its own check; what it refuses still comes back typed.
            declared = rt.describe_tool("remote.upper")
            assert declared is not None
            assert validates_itself(declared)
            with pytest.raises(InvalidToolArguments):
                await rt.call_tool("remote.upper", {"text": 5}, timeout=5)
            with pytest.raises(InvalidToolArguments):
                await rt.call_tool("remote.upper", {"text": "a", "extra": 1}, timeout=5)
            # Request/reply both ways.
            await bus.publish("probe.request", Event(payload=b"ping"))
            assert await payload_of(out, "request") == b"echo:ping"
            await bus.publish("call.ask", Event(payload=b"stressed"))
            assert await payload_of(results, "result") == b"desserts"
            # A deadline: typed timeout within it, and the in-process tool is cancelled.
            await bus.publish("probe.timeout", Event())
            kind, elapsed = (await payload_of(out, "timeout")).decode().split()
            assert kind == "ToolTimeout"
            assert 0.25 <= float(elapsed) < 1.5
            with anyio.fail_after(5):
                await local.hang_cancelled.wait()
            # Cancellation reaches the remote capability when its caller's deadline passes.
            with pytest.raises(ToolTimeout):
                await rt.call_tool("remote.hang", {}, timeout=0.3)
            await lines.wait_for("CANCELLED remote.hang")
            # Timers deliver to the agent's mailbox.
            await bus.publish("probe.schedule", Event())
            assert (await payload_of(out, "tick")).startswith(b"tick after")
            # A spawned child connects on its own: a remote agent like its parent.
            await bus.publish("probe.spawn", Event())
            assert await payload_of(out, "spawn") == b"child"
            child = rt.directory.get("child")
            assert child is not None
            assert child.remote
            assert child.status is AgentStatus.RUNNING
            await bus.publish("kid.in", Event(payload=b"hi"))
            assert await payload_of(out, "kid") == b"kid:hi"

            # Supervision as in process: the failing event is a dead letter on the server,
            # and a fresh instance (counting from zero) handles the next one.
            await bus.publish("probe.crash", Event(payload=b"boom"))
            letter = await next_of(letters, "", timeout=10)
            assert letter.payload == b"boom"
            assert letter.metadata["dead_letter.reason"] == "poison"
            await bus.publish("probe.count", Event())
            assert await payload_of(out, "count") == b"1"
            # The instance that spawned the child ended (restarted): the child stopped first,
            # as in process, and disconnected.
            await wait_until(lambda: _status(host, "child") is AgentStatus.DISCONNECTED)

            await stop(process, lines)


# ------------------------------------------------------------------ reconnecting


async def test_a_remote_agent_survives_a_server_restart_on_the_same_port(tmp_path: Path) -> None:
    async with hosting() as host:
        bus = host.bus
        async with (
            bus.subscribe("loom.lifecycle.remote") as life,
            bus.subscribe("output.>") as out,
            agent_process(tmp_path, REMOTE, host) as (process, lines),
        ):
            await next_of(out, "ready", timeout=15)
            await next_of(life, "agent.running")
            port = host.port

            await host.stop()
            await next_of(life, "agent.disconnected")
            await host.start()
            assert host.port == port
            await next_of(life, "agent.running", timeout=10)

            # Resubscribed: wait until the server's directory shows the dynamic subscription
            # again (polling its state; no event announces a subscription).
            with anyio.fail_after(10):
                while "extra.*" not in _patterns(host, "remote"):  # noqa: ASYNC110
                    await anyio.sleep(0.01)

            n = 20
            for i in range(n):
                await bus.publish("input.x", Event(payload=f"a{i}".encode()))
                await bus.publish("extra.z", Event(payload=f"b{i}".encode()))
            await bus.publish("probe.count", Event())
            upper: list[bytes] = []
            extra: list[bytes] = []
            with anyio.fail_after(15):
                while True:
                    event = (await out.receive()).event
                    if event.type == "count":
                        break
                    if event.type == "upper":
                        upper.append(event.payload)
                    elif event.type == "extra":
                        extra.append(event.payload)
            # Exactly once, and in order per topic.
            assert upper == [f"A{i}".encode() for i in range(n)]
            assert extra == [f"b{i}".encode() for i in range(n)]
            # One registration: one running agent, one connection on the new server.
            assert host.server is not None
            assert host.server.statistics().registered == 1
            assert host.server.statistics().connected == 1
            assert [a.id for a in host.runtime.agents() if a.id == "remote"] == ["remote"]

            await stop(process, lines)


# ------------------------------------------------------------------ in-process pieces
