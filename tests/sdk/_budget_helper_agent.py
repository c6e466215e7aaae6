"""A remote SDK agent process whose capability runs a whole cognitive turn in process, with a
tool local to it, for ``test_budget_span.py``; not a test module.

Usage: python _budget_helper_agent.py LLM_BASE_URL, with ``LOOM_BRIDGE_ADDR`` set: agent
``helper`` offering ``think.helper``, which runs a turn on the scripted model whose tool is
``local.y`` (never crossing the server). Called for another turn, its turn joins that turn's
scope (a copy pushed here), and returns ``{"kind": ..., "ok": ..., "refused": ...}``.
"""

from __future__ import annotations

from typing import Any

from loom import Agent
from loom.runtime import Budget
from loom.runtime.cognition import Loop, LoopConfig, Toolset
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.memory import AgentContext, InMemoryStore
from loom.runtime.tools import FunctionTool

OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


async def local() -> str:
    return "local"


def main(base_url: str) -> None:
    config = ProviderConfig(kind="openai", model="m", base_url=base_url, timeout_s=10.0)

    async def think() -> dict[str, Any]:
        async with OpenAIProvider("scripted", config) as llm:
            tool = FunctionTool(
                local, name="local.y", description="Local.", parameters_schema=OBJECT
            )
            loop = Loop(
                llm,
                tools=Toolset(tools=[tool]),
                config=LoopConfig(max_tokens=100),
                agent_id="helper",
                budget=Budget(),
            )
            context = AgentContext(InMemoryStore(), agent_id="helper", thread_id="t")
            outcome = await loop.run(context, "think")
        errors = sum(result.is_error for result in outcome.tool_results)
        return {
            "kind": outcome.kind,
            "ok": len(outcome.tool_results) - errors,
            "refused": errors,
        }

    tool = FunctionTool(think, name="think.helper", description="Think.", parameters_schema=OBJECT)
    print("ended", Agent("helper", capabilities=[tool]).run().value, flush=True)


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:])
