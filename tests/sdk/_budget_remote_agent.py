"""A remote SDK agent process for the budget tests (``test_budget_remote.py``).

Usage: python _budget_remote_agent.py relay|fan|pfan [ID], with ``LOOM_BRIDGE_ADDR`` set.
``relay`` runs agent ``remote`` offering ``hop.remote``, which calls ``hop.c`` through the
server; ``fan`` runs it offering ``fan.remote(n)``, which calls ``leaf.x`` ``n`` times
(``pfan``: all at once). Given an ``ID``, the agent is ``ID`` offering ``fan.ID``. They are
the agents of ``_budget_agents.py``, here on the far side of the bridge.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.sdk._budget_agents import Calls, fan, relay


def main(kind: str, agent_id: str = "remote") -> None:
    calls = Calls()
    if kind == "relay":
        agent = relay(agent_id, "hop.remote", "hop.c", calls)
    else:
        agent = fan(agent_id, f"fan.{agent_id}", "leaf.x", calls, parallel=kind == "pfan")
    print("ended", agent.run().value, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
