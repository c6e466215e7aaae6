"""A cognitive agent in its own process whose turn calls other agents' capabilities, for
``test_budget_span.py``; not a test module.

Usage: python _budget_origin_agent.py LLM_BASE_URL BUDGET_JSON CAPABILITY..., with
``LOOM_BRIDGE_ADDR`` set: agent ``origin`` with the caps of ``BUDGET_JSON`` (a
:class:`~loom.runtime.Budget`), calling the scripted model itself. Its turn also has a local
tool, ``local.x``, called in this process without crossing the server.
"""

from __future__ import annotations

import sys

import msgspec

from loom import CognitiveAgent
from loom.runtime import Budget
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.tools import FunctionTool


async def local() -> str:
    return "local"


def main(base_url: str, budget: str, *capabilities: str) -> None:
    config = ProviderConfig(kind="openai", model="m", base_url=base_url, timeout_s=10.0)
    agent = CognitiveAgent(
        "origin",
        llm=OpenAIProvider("scripted", config),
        use_capabilities=list(capabilities),
        tools=[
            FunctionTool(
                local,
                name="local.x",
                description="A local tool.",
                parameters_schema={"type": "object", "properties": {}},
            )
        ],
        budget=msgspec.json.decode(budget, type=Budget),
    )
    print("ended", agent.run().value, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
