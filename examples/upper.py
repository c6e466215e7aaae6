"""The upper-casing agent: run it with ``loom run examples/`` (or ``python examples/upper.py``
against a running ``loom serve``), then ``loom publish input.text hello`` and
``loom tail 'output.>'``."""

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
