"""The example of the issue, verbatim, hosted in process; and the same agent in class form."""

from __future__ import annotations

import anyio
import pytest

from loom import AgentRuntime, Event, EventBus, SupervisionPolicy
from loom.runtime import Envelope

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

# ---- the example, verbatim (only the type: ignore is added: mypy --strict wants `event` typed)

from loom import Agent, Context, capability  # noqa: E402


@capability("text.upper", description="Upper-case a text")
async def upper(text: str) -> str:
    return text.upper()


async def on_event(ctx: Context, topic: str, event) -> None:  # type: ignore[no-untyped-def]
    result = await ctx.tool("text.upper", {"text": event.payload.decode()})
    await ctx.emit("output.upper", payload=result.encode())


agent = Agent("upperer", topics=["input.*"], capabilities=[upper], on_event=on_event)

# ---- end of the example


async def test_the_example_runs_in_process() -> None:
    async with EventBus() as bus, AgentRuntime(bus) as rt:
        await rt.start(agent)
        async with bus.subscribe("output.upper") as out:
            request = Event(type="text", payload=b"hello", envelope=Envelope(thread_id="t1"))
            await bus.publish("input.x", request)
            await bus.publish("input.y", Event(payload=b"again"))
            with anyio.fail_after(5):
                first = await out.receive()
                second = await out.receive()
        # Not a topic it listens to: nothing comes of it.
        assert await bus.publish("input.x.y", Event(payload=b"ignored")) == 0
        assert rt.directory.by_capability("text.upper")[0].id == "upperer"
    assert first.topic == "output.upper"
    assert first.event.payload == b"HELLO"
    assert first.event.source == "upperer"
    assert first.event.envelope.thread_id == "t1"
    assert first.event.envelope.hop == 1
    assert second.event.payload == b"AGAIN"


class Shouter(Agent):
    """The class form: a capability method, an overridden on_event, state on the instance."""

    topics = ("input.*",)

    def __init__(self, id: str, *, suffix: str = "!", policy: SupervisionPolicy | None = None):
        super().__init__(id, policy=policy)
        self.suffix = suffix
        self.count = 0

    @capability("text.shout", description="Upper-case a text and add the suffix")
    async def shout(self, text: str) -> str:
        return text.upper() + self.suffix

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
        if event.payload == b"crash":
            raise RuntimeError("crash")
        self.count += 1
        ctx.state["last"] = event.payload.decode()
        result = await ctx.tool("text.shout", {"text": event.payload.decode()})
        await ctx.emit("output.shout", payload=f"{self.count}:{result}".encode())


async def test_the_class_form_runs_in_process() -> None:
    shouter = Shouter("shouter", suffix="!!")
    async with EventBus() as bus, AgentRuntime(bus) as rt:
        await rt.start(shouter)
        async with bus.subscribe("output.shout") as out:
            await bus.publish("input.a", Event(payload=b"hello"))
            await bus.publish("input.b", Event(payload=b"world"))
            with anyio.fail_after(5):
                payloads = [(await out.receive()).event.payload for _ in range(2)]
    assert payloads == [b"1:HELLO!!", b"2:WORLD!!"]
    assert shouter.count == 2
    assert shouter.state == {"last": "world"}


async def test_the_class_form_restarts_as_a_fresh_instance() -> None:
    policy = SupervisionPolicy(poison_after=1, backoff_initial_s=0.01, backoff_max_s=0.05)
    shouter = Shouter("shouter", suffix="?", policy=policy)
    async with EventBus() as bus, AgentRuntime(bus) as rt:
        await rt.start(shouter)
        async with bus.subscribe("output.shout") as out, bus.subscribe("loom.deadletter.>") as dl:
            await bus.publish("input.a", Event(payload=b"one"))
            await bus.publish("input.a", Event(payload=b"crash"))
            await bus.publish("input.a", Event(payload=b"two"))
            with anyio.fail_after(5):
                payloads = [(await out.receive()).event.payload for _ in range(2)]
                letter = await dl.receive()
    # The fresh instance was built with the same arguments and counts from zero again.
    assert payloads == [b"1:ONE?", b"1:TWO?"]
    assert letter.event.payload == b"crash"
    assert letter.event.metadata["dead_letter.reason"] == "poison"
