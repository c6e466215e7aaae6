"""The upper-casing agent. With `make run` (a `loom serve` on 127.0.0.1:50051) in another
terminal, run it with `loom run examples/` or `python examples/upper.py` (the address comes
from LOOM_BRIDGE_ADDR, else 127.0.0.1:50051), then `loom tail 'output.>'` and
`loom publish input.text hello`: the tail prints `output.upper ... HELLO`."""

from loom import Agent, Context, Event, capability


@capability("text.upper", description="Upper-case a text")
async def upper(text: str) -> str:
    return text.upper()


async def on_event(ctx: Context, topic: str, event: Event) -> None:
    result = await ctx.tool("text.upper", {"text": event.payload.decode()})
    await ctx.emit("output.upper", payload=result.encode())


agent = Agent("upperer", topics=["input.*"], capabilities=[upper], on_event=on_event)

if __name__ == "__main__":
    agent.run()
