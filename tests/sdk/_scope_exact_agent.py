"""Agent processes for ``test_scope_exact.py``; not a test module. Every tool they run is
counted in the shared :class:`~tests.sdk._scope_counter.Running` of ``DIR``.

Usage, with ``LOOM_BRIDGE_ADDR`` set:

* ``origin LLM_BASE_URL BUDGET_JSON DIR CAPABILITY...``: the cognitive agent ``origin`` with
  the caps of ``BUDGET_JSON``, calling the capabilities and its local tools ``local.slow``
  (1.5 s) and ``local.hang`` (writes ``DIR/hanging``, then waits for ever), which run in its
  process without crossing the server;
* ``fan ID DIR``: agent ``ID`` offering ``fan.ID(n)``, which calls ``leaf.x`` ``n`` times at
  once and returns ``{"ok": ..., "refused": ...}``;
* ``helper LLM_BASE_URL DIR``: agent ``helper`` offering ``think.helper``, which runs a turn
  (joining the caller's scope) whose tool ``local.y`` runs in its process;
* ``leaf DIR``: agent ``leafer`` offering ``leaf.x`` (0.3 s).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loom import Agent, CognitiveAgent, Context
from loom.runtime import Budget
from loom.runtime.cognition import Loop, LoopConfig, Toolset
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.memory import AgentContext, InMemoryStore
from loom.runtime.tools import FunctionTool, ToolCallRefused, ToolError
from tests.sdk._scope_counter import Running

OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def _llm(base_url: str) -> OpenAIProvider:
    config = ProviderConfig(kind="openai", model="m", base_url=base_url, timeout_s=10.0)
    return OpenAIProvider("scripted", config)


def origin(base_url: str, budget: str, root: str, *capabilities: str) -> Agent:
    running = Running(Path(root))

    async def slow() -> str:
        async with running.call("local.slow"):
            await anyio.sleep(1.5)
        return "slow"

    async def hang() -> str:
        async with running.call("local.hang"):
            (Path(root) / "hanging").touch()
            await anyio.sleep_forever()
        return "never"

    return CognitiveAgent(
        "origin",
        llm=_llm(base_url),
        use_capabilities=list(capabilities),
        tools=[
            FunctionTool(slow, name="local.slow", description="Slow.", parameters_schema=OBJECT),
            FunctionTool(hang, name="local.hang", description="Hang.", parameters_schema=OBJECT),
        ],
        budget=msgspec.json.decode(budget, type=Budget),
    )


def fan(agent_id: str, root: str) -> Agent:
    running = Running(Path(root))
    holder: dict[str, Context] = {}

    async def on_start(ctx: Context) -> None:
        holder["ctx"] = ctx

    async def run(n: int) -> dict[str, int]:
        seen = {"ok": 0, "refused": 0}

        async def one() -> None:
            try:
                await holder["ctx"].tool("leaf.x", {})
            except ToolCallRefused:
                seen["refused"] += 1
            except ToolError:
                raise
            else:
                seen["ok"] += 1

        async with running.call(f"fan.{agent_id}"), anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
        return seen

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    tool = FunctionTool(run, name=f"fan.{agent_id}", description="Fan.", parameters_schema=schema)
    return Agent(agent_id, capabilities=[tool], on_start=on_start)


def helper(base_url: str, root: str) -> Agent:
    running = Running(Path(root))

    async def local() -> str:
        async with running.call("local.y"):
            await anyio.sleep(0.2)
        return "local"

    async def think() -> dict[str, Any]:
        async with running.call("think.helper"), _llm(base_url) as llm:
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
        return {"kind": outcome.kind, "ok": len(outcome.tool_results) - errors, "refused": errors}

    tool = FunctionTool(think, name="think.helper", description="Think.", parameters_schema=OBJECT)
    return Agent("helper", capabilities=[tool])


def leaf(root: str) -> Agent:
    running = Running(Path(root))

    async def run() -> str:
        async with running.call("leaf.x"):
            await anyio.sleep(0.3)
        return "leaf"

    tool = FunctionTool(run, name="leaf.x", description="A leaf.", parameters_schema=OBJECT)
    return Agent("leafer", capabilities=[tool])


def main(kind: str, *args: str) -> None:
    makers: dict[str, Callable[..., Agent]] = {
        "origin": origin,
        "fan": fan,
        "helper": helper,
        "leaf": leaf,
    }
    made = makers[kind](*args)
    print("ended", made.run().value, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
