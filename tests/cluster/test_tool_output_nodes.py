"""A tool's partial output across cluster nodes, end to end: two ``loom serve --nats URL --node
X`` processes on a real nats-server, an SDK agent on node b whose capability streams pieces
(``stream_tool_output``), and callers on node a: a hosted cognitive agent (its stream topic
shows the pieces in order, between the tool's start and finish) and ``loom call`` (prints each
piece as it comes, the output after)."""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall

from ..sdk._cli_support import Running, clean_env, loom, running, running_argv
from .conftest import NatsServerProcess

pytestmark = pytest.mark.anyio

COUNTER = """\
import asyncio
import os
from pathlib import Path

from loom import Agent, capability
from loom.runtime.tools import stream_tool_output


@capability("pieces.count")
async def count(n: int, hold: bool = False) -> str:
    \"\"\"Stream n pieces, one a line, then answer; with hold, wait for the go mark after the
    first piece.\"\"\"
    for i in range(n):
        await stream_tool_output(f"piece {i}\\n")
        if hold and i == 0:
            go = Path(os.environ["MARKS"], "go")
            for _ in range(600):  # the test's mark, within 30 s
                if go.exists():
                    break
                await asyncio.sleep(0.05)
    return f"counted {n}"


if __name__ == "__main__":
    Agent("counter", capabilities=[count]).run()
"""


async def node(
    stack: AsyncExitStack, root: Path, nats: NatsServerProcess, name: str
) -> tuple[Running, str]:
    """``loom serve`` node ``name`` in ``root/name`` (its loom.toml, if any, and data)."""
    where = root / name
    where.mkdir(exist_ok=True)
    server = await stack.enter_async_context(
        running(
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(where / "data"),
            "--nats",
            nats.url,
            "--node",
            name,
            "--cluster-heartbeat",
            "0.5",
            "--log-level",
            "info",
            cwd=where,
        )
    )
    address = (await server.wait_for(r"listening on (\S+:\d+)", timeout=60)).group(1)
    await server.wait_for(rf"loom serve: cluster node {name} ")
    return server, address


async def wait_for_tool(address: str, name: str, cwd: Path) -> None:
    with anyio.fail_after(20):
        while True:
            listed = await loom("tools", "-a", address, cwd=cwd)
            if name in listed.stdout.decode():
                return


async def test_pieces_from_another_node_reach_the_callers_stream_and_loom_call(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    (tmp_path / "counter.py").write_text(COUNTER)
    (tmp_path / "a").mkdir()
    with anyio.fail_after(150):
        async with ScriptedLLMServer() as llm, AsyncExitStack() as stack:
            (tmp_path / "a" / "loom.toml").write_text(
                "[llm.scripted]\n"
                'kind = "openai"\n'
                'model = "scripted-model"\n'
                f'base_url = "{llm.openai_base_url}"\n'
                "timeout_s = 10\n\n"
                "[agents.assistant]\n"
                'llm = "scripted"\n'
                'capabilities = ["pieces.count"]\n'
            )
            llm.push(
                Reply(tool_calls=[ScriptedToolCall(name="pieces_count", arguments={"n": 4})]),
                Reply(text="Counted."),
            )
            server_a, a = await node(stack, tmp_path, nats_server, "a")
            await server_a.wait_for(r"hosting agent assistant")
            _, b = await node(stack, tmp_path, nats_server, "b")
            counter = await stack.enter_async_context(
                running_argv(
                    [sys.executable, str(tmp_path / "counter.py")],
                    cwd=tmp_path,
                    env=clean_env(LOOM_BRIDGE_ADDR=b, MARKS=str(tmp_path)),
                )
            )
            await counter.wait_for("connected to .* as counter$", timeout=30)
            await wait_for_tool(a, "pieces.count", tmp_path)

            # A hosted agent's turn on node a: the pieces on its stream topic.
            async with running(
                "tail", "agent.assistant.stream", "--json", "-a", a, cwd=tmp_path
            ) as tail:
                await tail.wait_for(r"tailing")
                asked = await loom("ask", "assistant", "count", "-a", a, cwd=tmp_path)
                assert asked.returncode == 0, asked.stderr
                assert asked.stdout.decode().endswith("Counted.\n")
                await tail.wait_for(r'"turn\.end"')
            events = [json.loads(line) for line in tail.lines if line.startswith("{")]
            kinds = [e["type"] for e in events]
            texts = [
                json.loads(e["payload"])["text"] for e in events if e["type"] == "turn.tool_output"
            ]
            assert texts == [f"piece {i}\n" for i in range(4)]
            first = kinds.index("turn.tool_output")
            last = len(kinds) - 1 - kinds[::-1].index("turn.tool_output")
            assert kinds.index("turn.tool_started") < first
            assert kinds.index("turn.tool_finished") > last

            # loom call on node a: each piece printed as it comes, while the tool on node b
            # still runs (it holds after the first until the mark), then the output.
            async with running(
                "call", "-a", a, "pieces.count", '{"n": 3, "hold": true}', cwd=tmp_path
            ) as call:
                await call.wait_for(r"^piece 0$")
                assert call.count(r"^piece 1$") == 0
                assert call.process.returncode is None
                (tmp_path / "go").touch()
                assert await call.wait(timeout=30) == 0
            assert call.lines[:4] == ["piece 0", "piece 1", "piece 2", '"counted 3"'], call.output

            # --no-stream: the output only (for scripts).
            plain = await loom(
                "call", "-a", a, "pieces.count", '{"n": 3}', "--no-stream", cwd=tmp_path
            )
            assert plain.returncode == 0, plain.stderr
            assert plain.stdout.decode() == '"counted 3"\n'
