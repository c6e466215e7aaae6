"""A cognitive agent in its own process whose model calls cost tokens, for
``test_budget_spend_remote.py``; not a test module.

Usage: python _budget_spend_agent.py AGENT_ID LLM_BASE_URL, with ``LOOM_BRIDGE_ADDR`` set. The
agent calls the scripted model itself (no key on the server's side), so its spend is made in
this process and must count in the server's ledger.
"""

from __future__ import annotations

import sys

from loom import CognitiveAgent
from loom.runtime.llm import OpenAIProvider, ProviderConfig


def main(agent_id: str, base_url: str) -> None:
    config = ProviderConfig(
        kind="openai",
        model="scripted-model",
        base_url=base_url,
        timeout_s=10.0,
        max_output_tokens=200,
        cost_per_1k_input=1.0,
        cost_per_1k_output=2.0,
    )
    agent = CognitiveAgent(agent_id, llm=OpenAIProvider("scripted", config))
    print("ended", agent.run().value, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
