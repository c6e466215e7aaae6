"""Remote SDK agent processes for the partial-output tests (``test_tool_output_remote.py``).

Usage, with ``LOOM_BRIDGE_ADDR`` set:

* ``python _tool_output_agents.py asker BASE_URL TOOL``: ``CognitiveAgent("asker")`` whose
  model is the scripted one at ``BASE_URL`` (OpenAI wire) and whose turns may call ``TOOL``
  (a tool served elsewhere, through the server); its stream topic is ``agent.asker.stream``.
* ``python _tool_output_agents.py streamer``: agent ``streamer`` offering ``stream.remote``,
  which streams ``piece 0;`` ... ``piece 19;`` (``stream_tool_output``) and answers
  ``"counted"``.
"""

from __future__ import annotations

import sys
from typing import Any

from loom import Agent, CognitiveAgent
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.tools import FunctionTool, stream_tool_output

PIECES = 20
OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def counting_tool(name: str) -> FunctionTool:
    """``name``: streams ``PIECES`` pieces of partial output, then answers ``"counted"``."""

    async def count() -> str:
        for i in range(PIECES):
            await stream_tool_output(f"piece {i};")
        return "counted"

    return FunctionTool(
        count, name=name, description="Count, piece by piece.", parameters_schema=OBJECT
    )


def main(argv: list[str]) -> None:
    agent: Agent
    if argv[0] == "asker":
        base_url, tool = argv[1], argv[2]
        config = ProviderConfig(kind="openai", model="m", base_url=base_url, timeout_s=10.0)
        llm = OpenAIProvider("scripted", config)
        agent = CognitiveAgent("asker", llm=llm, use_capabilities=[tool])
    else:
        agent = Agent("streamer", capabilities=[counting_tool("stream.remote")])
    print("ended", agent.run().value, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
