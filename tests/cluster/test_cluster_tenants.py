"""Two tenants on the three nodes of the end-to-end cluster (``_e2e_support``), with one
``loom.toml`` [tokens] for every node: neither reads, calls nor impersonates the other from
any node, each reaches its own agents from every node, and the operator's admin token sees
both from the node where neither has an agent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest

from ..sdk._cli_support import clean_env, loom
from ._e2e_support import nats_cluster, nodes_on

pytestmark = pytest.mark.anyio

ALPHA = "alpha-token-0123456789abcdef"
BETA = "beta-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"

CONFIG = """\
[tokens.alpha]
token_env = "LOOM_TOKEN_ALPHA"
namespace = "team-a"

[tokens.beta]
token_env = "LOOM_TOKEN_BETA"
namespace = "team-b"
"""

UPPER = """\
import os

from loom import Agent, capability


@capability(os.environ["TOOL"])
async def upper(text: str) -> str:
    \"\"\"Upper-case a text.\"\"\"
    return text.upper()


async def on_event(ctx, topic, event):
    print(f"got {topic} {event.payload.decode()}", flush=True)


agent = Agent(os.environ["AGENT_ID"], topics=[os.environ["TOPIC"]], capabilities=[upper],
              on_event=on_event)

if __name__ == "__main__":
    agent.run()
"""


async def test_two_tenants_on_three_nodes_cannot_read_call_or_impersonate_each_other(
    tmp_path: Path,
) -> None:
    (tmp_path / "loom.toml").write_text(CONFIG)
    tokens = {"LOOM_TOKEN_ALPHA": ALPHA, "LOOM_TOKEN_BETA": BETA, "LOOM_ADMIN_TOKEN": ADMIN}
    with anyio.fail_after(180):
        async with (
            nats_cluster(tmp_path) as nats,
            nodes_on(tmp_path, nats, "a", "b", "c", env=tokens) as nodes,
        ):
            alpha = await nodes.agent(
                "a", "alpha", UPPER, ready="team-a:upper", LOOM_TOKEN=ALPHA,
                AGENT_ID="team-a:upper", TOOL="team-a.upper", TOPIC="team-a.jobs",
            )  # fmt: skip
            await nodes.agent(
                "b", "beta", UPPER, ready="team-b:upper", LOOM_TOKEN=BETA,
                AGENT_ID="team-b:upper", TOOL="team-b.upper", TOPIC="team-b.jobs",
            )  # fmt: skip

            async def as_(token: str, node: str, *args: str) -> tuple[int, str]:
                env = clean_env(LOOM_TOKEN=token)
                done = await loom(*args, "-a", nodes.addresses[node], cwd=tmp_path, env=env)
                return done.returncode, (done.stdout + done.stderr).decode()

            # Each tenant reaches its own agent on the other node: listed, called, published to.
            with anyio.fail_after(20):
                while "team-a:upper" not in (await as_(ALPHA, "b", "agents"))[1]:
                    pass
            code, out = await as_(ALPHA, "b", "call", "team-a.upper", '{"text": "mine"}')
            assert (code, out.strip()) == (0, '"MINE"'), out
            code, out = await as_(ALPHA, "b", "publish", "team-a.jobs", "from-b")
            assert code == 0, out
            await alpha.wait_for("got team-a.jobs from-b")

            # Beta, on node b, sees nothing of alpha's agent on node a ...
            code, listed = await as_(BETA, "b", "agents")
            assert code == 0, listed
            assert "team-b:upper" in listed, listed
            assert "team-a" not in listed, listed
            code, tools = await as_(BETA, "b", "tools")
            assert "team-b.upper" in tools, tools
            assert "team-a" not in tools, tools
            # ... nor the cluster's traffic in `loom status` (it names every tenant's nodes).
            code, status = await as_(BETA, "b", "status")
            assert code == 0, status
            assert "namespace:" in status, status
            assert "cluster" not in status, status
            # ... cannot call it, publish to it, nor read its topics ...
            code, out = await as_(BETA, "b", "call", "team-a.upper", '{"text": "theirs"}')
            assert code != 0, out
            assert "outside its namespace" in out, out
            code, out = await as_(BETA, "b", "publish", "team-a.jobs", "intruder")
            assert code != 0, out
            assert "outside its namespace" in out, out
            code, out = await as_(BETA, "b", "tail", "team-a.>", "--since", "1")
            assert code != 0, out
            assert "outside its namespace" in out, out
            # ... nor register an agent under alpha's namespace (it exits at once, code 3).
            path = tmp_path / "spy.py"
            path.write_text(UPPER)
            env = clean_env(
                LOOM_BRIDGE_ADDR=nodes.addresses["b"], LOOM_TOKEN=BETA,
                AGENT_ID="team-a:spy", TOOL="team-a.spy", TOPIC="team-a.jobs",
            )  # fmt: skip
            ran = await anyio.run_process(
                [sys.executable, str(path)], cwd=tmp_path, env=env, check=False
            )
            assert ran.returncode == 3, ran.stdout + ran.stderr
            assert b"outside its namespace" in ran.stdout + ran.stderr

            # From node c, where neither tenant has an agent: the same rules hold.
            with anyio.fail_after(20):
                while "team-b:upper" not in (await as_(BETA, "c", "agents"))[1]:
                    pass
            code, out = await as_(ALPHA, "c", "call", "team-a.upper", '{"text": "via c"}')
            assert (code, out.strip()) == (0, '"VIA C"'), out
            code, out = await as_(BETA, "c", "call", "team-b.upper", '{"text": "via c"}')
            assert (code, out.strip()) == (0, '"VIA C"'), out
            code, listed = await as_(BETA, "c", "agents")
            assert "team-b:upper" in listed, listed
            assert "team-a" not in listed, listed
            code, out = await as_(BETA, "c", "call", "team-a.upper", '{"text": "theirs"}')
            assert code != 0, out
            assert "outside its namespace" in out, out
            code, out = await as_(ALPHA, "c", "publish", "team-b.jobs", "intruder")
            assert code != 0, out
            assert "outside its namespace" in out, out
            # The operator's admin token on node c sees both tenants' agents, each on its node.
            code, listed = await as_(ADMIN, "c", "agents", "--json")  # one object a line
            assert code == 0, listed
            where = {row["id"]: row.get("node") for row in map(json.loads, listed.splitlines())}
            assert where == {"team-a:upper": "a", "team-b:upper": "b"}, listed
            assert "got team-a.jobs intruder" not in alpha.output
            assert "got team-b.jobs intruder" not in nodes.agents["beta"].output
