"""Agent processes for ``test_scope_nested.py``; not a test module. Every tool they run is
counted in the shared :class:`~tests.sdk._scope_counter.Running` of ``DIR``.

Usage, with ``LOOM_BRIDGE_ADDR`` set:

* ``origin LLM_BASE_URL BUDGET_JSON DIR N REFUSALS``: the cognitive agent ``origin`` with the
  caps of ``BUDGET_JSON`` and one local tool, ``local.fan``, which runs in its process and
  calls ``leaf.x`` ``N`` times at once through ``ctx.tool`` (another agent's process serves
  it); it touches ``DIR/release`` once ``REFUSALS`` calls were refused (the calls running
  may end then), and returns ``{"ok": ..., "refused": [budget, ...]}``;
* ``leaf DIR``: agent ``leafer`` offering ``leaf.x``, which waits for ``DIR/release`` (at
  most 10 s) so that the calls of one fan run at the same time.
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
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.tools import FunctionTool, ToolCallRefused
from tests.sdk._scope_counter import Running

OBJECT: dict[str, Any] = {"type": "object", "properties": {}}
RELEASE_WAIT = 10.0


def origin(base_url: str, budget: str, root: str, n: str, refusals: str) -> Agent:
    running = Running(Path(root))
    release = Path(root) / "release"
    holder: dict[str, Context] = {}

    async def fan() -> dict[str, Any]:
        seen: dict[str, Any] = {"ok": 0, "refused": []}

        async def one() -> None:
            try:
                await holder["ctx"].tool("leaf.x", {})
            except ToolCallRefused as exc:
                seen["refused"].append(exc.budget)
            else:
                seen["ok"] += 1
                if len(seen["refused"]) == int(refusals):
                    release.touch()  # the calls left running may end now

        async with running.call("local.fan"), anyio.create_task_group() as tg:
            for _ in range(int(n)):
                tg.start_soon(one)
        release.touch()
        return seen

    class Origin(CognitiveAgent):
        async def on_start(self, ctx: Context) -> None:
            holder["ctx"] = ctx
            await super().on_start(ctx)

    config = ProviderConfig(kind="openai", model="m", base_url=base_url, timeout_s=10.0)
    return Origin(
        "origin",
        llm=OpenAIProvider("scripted", config),
        tools=[FunctionTool(fan, name="local.fan", description="Fan.", parameters_schema=OBJECT)],
        budget=msgspec.json.decode(budget, type=Budget),
    )


def leaf(root: str) -> Agent:
    running = Running(Path(root))
    release = Path(root) / "release"

    async def run() -> str:
        async with running.call("leaf.x"):
            # Bounded: without the release (no call of the fan refused), it ends on its own.
            # Another process touches the file: no event of this one can say it.
            with anyio.move_on_after(RELEASE_WAIT):
                while not release.exists():  # noqa: ASYNC110
                    await anyio.sleep(0.02)
        return "leaf"

    tool = FunctionTool(run, name="leaf.x", description="A leaf.", parameters_schema=OBJECT)
    return Agent("leafer", capabilities=[tool])


def main(kind: str, *args: str) -> None:
    makers: dict[str, Callable[..., Agent]] = {"origin": origin, "leaf": leaf}
    made = makers[kind](*args)
    print("ended", made.run().value, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
