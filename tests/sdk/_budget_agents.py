"""Agents that call agents, for the budget tests; not a test module.

A *relay* offers one capability that calls another by name through its ``ctx.tool`` (the
path every agent's nested call takes: in process, the runtime; through the bridge, the
server). A *fan* calls a tool ``n`` times and says how many calls were refused. Every
invocation is counted in :data:`Calls`, so a test can say which agents ran.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio

from loom import Agent, Context
from loom.runtime.tools import FunctionTool, ToolCallRefused, ToolError

OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


class Calls:
    """Invocations by tool name, and the most that ran at once over a group of tools."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.running = 0
        self.peak = 0

    async def ran(self, name: str, seconds: float = 0.0) -> None:
        self.count[name] += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await anyio.sleep(seconds)
        finally:
            self.running -= 1


def relay(agent_id: str, name: str, then: str | None, calls: Calls) -> Agent:
    """An agent offering ``name``: it calls ``then`` (when given) and returns its result."""
    holder: dict[str, Context] = {}

    async def on_start(ctx: Context) -> None:
        holder["ctx"] = ctx

    async def run() -> Any:
        calls.count[name] += 1
        if then is None:
            return name
        return await holder["ctx"].tool(then, {})

    tool = FunctionTool(run, name=name, description=f"Relay to {then}.", parameters_schema=OBJECT)
    return Agent(agent_id, capabilities=[tool], on_start=on_start)


def leaf(agent_id: str, name: str, calls: Calls, seconds: float = 0.0) -> Agent:
    """An agent offering ``name``, which takes ``seconds`` (counted in ``calls.peak``)."""

    async def run() -> str:
        await calls.ran(name, seconds)
        return "leaf"

    tool = FunctionTool(run, name=name, description="A leaf.", parameters_schema=OBJECT)
    return Agent(agent_id, capabilities=[tool])


def fan(agent_id: str, name: str, then: str, calls: Calls, *, parallel: bool = False) -> Agent:
    """An agent offering ``name(n)``: it calls ``then`` ``n`` times (all at once when
    ``parallel``) and returns ``{"ok": ..., "refused": ...}``; while it runs it counts in
    ``calls.peak`` as a running call too."""
    holder: dict[str, Context] = {}

    async def on_start(ctx: Context) -> None:
        holder["ctx"] = ctx

    async def run(n: int) -> dict[str, int]:
        seen = {"ok": 0, "refused": 0}

        async def one() -> None:
            try:
                await holder["ctx"].tool(then, {})
            except ToolCallRefused:
                seen["refused"] += 1
            except ToolError as exc:
                # Through the bridge a refusal comes back by its code.
                if "refused" not in str(exc):
                    raise
                seen["refused"] += 1
            else:
                seen["ok"] += 1

        calls.count[name] += 1
        calls.running += 1
        calls.peak = max(calls.peak, calls.running)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    if parallel:
                        tg.start_soon(one)
                    else:
                        await one()
        finally:
            calls.running -= 1
        return seen

    tool = FunctionTool(
        run,
        name=name,
        description=f"Call {then} n times.",
        parameters_schema={
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"],
        },
    )
    return Agent(agent_id, capabilities=[tool], on_start=on_start)
