"""Agent processes (``Agent.run``, connected through the bridge) that carry an A2A card, for
``test_a2a_bridge_agents.py``. Usage, with ``LOOM_BRIDGE_ADDR`` set:

* ``python _a2a_bridge_agents.py thinker BASE_URL MARK``: ``CognitiveAgent("thinker")`` whose
  model is the scripted one at ``BASE_URL`` (OpenAI wire), with the tool ``mark`` (it creates
  the file ``MARK``), and a card naming one skill.
* ``python _a2a_bridge_agents.py plain``: ``Agent("plain")`` with a card, whose handler takes
  a minute over each message (it runs no turns, so its stream takes no cancels of turns).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio

from loom import Agent, AgentCard, AgentSkill, CognitiveAgent, Context, Event
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.tools import FunctionTool

OBJECT: dict[str, Any] = {"type": "object", "properties": {}}
CARD = AgentCard(
    name="Thinker",
    description="Thinks slowly, then marks.",
    version="2.5.0",
    skills=(AgentSkill(id="think", name="Think", description="Think about it", tags=("t",)),),
)


def mark_tool(path: Path) -> FunctionTool:
    async def mark() -> str:
        await anyio.Path(path).write_text("marked")
        return "marked"

    return FunctionTool(mark, name="mark", description="Leave a mark.", parameters_schema=OBJECT)


async def slow(ctx: Context, topic: str, event: Event) -> None:
    await anyio.sleep(60)
    await ctx.reply(event, b"late")


def main(argv: list[str]) -> None:
    agent: Agent
    if argv[0] == "thinker":
        config = ProviderConfig(kind="openai", model="m", base_url=argv[1], timeout_s=120.0)
        llm = OpenAIProvider("scripted", config)
        agent = CognitiveAgent("thinker", llm=llm, tools=[mark_tool(Path(argv[2]))], a2a=CARD)
    else:
        agent = Agent("plain", on_event=slow, a2a=AgentCard(description="Plain and slow."))
    print("ended", agent.run().value, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
