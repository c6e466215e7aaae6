"""Helpers shared by the loop tests (``test_loop_*.py``); not a test module.

Every model call goes to a :class:`ScriptedLLMServer` on 127.0.0.1 through the real
:class:`OpenAIProvider`, so the loop is tested on the wire path it runs on in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from opentelemetry.trace import TracerProvider

from loom.runtime import Context, Event
from loom.runtime.cognition import Loop, LoopConfig, Toolset, TurnUpdate
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.memory import AgentContext, InMemoryStore
from loom.runtime.testing import ScriptedLLMServer
from loom.runtime.tools import FunctionTool, Tool

OBJECT: Mapping[str, Any] = {"type": "object", "properties": {}}


class Offers:
    """A behaviour that only offers tools (an agent's capabilities)."""

    def __init__(self, *tools: Tool) -> None:
        self._tools = tools

    async def on_start(self, ctx: Context) -> None:
        pass

    async def on_event(self, ctx: Context, topic: str, event: Event) -> None:
        pass

    async def on_stop(self, ctx: Context) -> None:
        pass

    def tools(self) -> list[Tool]:
        return list(self._tools)


def provider_config(server: ScriptedLLMServer, **fields: Any) -> ProviderConfig:
    """A config aimed at ``server``, with short backoffs."""
    defaults: dict[str, Any] = {
        "kind": "openai",
        "model": "scripted-model",
        "base_url": server.openai_base_url,
        "timeout_s": 5.0,
        "max_retries": 2,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.02,
    }
    return ProviderConfig(**{**defaults, **fields})


def echo_tool(name: str = "echo") -> Tool:
    async def echo(text: str) -> str:
        return f"echo: {text}"

    return FunctionTool(
        echo,
        name=name,
        description="Echo the text.",
        parameters_schema={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    )


class Updates:
    """Collects a turn's partial output."""

    def __init__(self) -> None:
        self.items: list[TurnUpdate] = []

    async def __call__(self, update: TurnUpdate) -> None:
        self.items.append(update)

    def of(self, cls: type[Any]) -> list[Any]:
        return [u for u in self.items if isinstance(u, cls)]


@asynccontextmanager
async def scripted_loop(
    *,
    tools: Sequence[Tool] = (),
    config: LoopConfig | None = None,
    provider_fields: Mapping[str, Any] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> AsyncIterator[tuple[ScriptedLLMServer, Loop, AgentContext]]:
    """A scripted server, a loop over an OpenAI provider aimed at it, and a fresh context.

    ``tracer_provider`` goes to both the provider and the loop, so their spans nest.
    """
    async with ScriptedLLMServer() as server:
        llm = OpenAIProvider(
            "scripted",
            provider_config(server, **(provider_fields or {})),
            tracer_provider=tracer_provider,
        )
        try:
            loop = Loop(
                llm,
                tools=Toolset(tools=tools),
                config=config,
                tracer_provider=tracer_provider,
                agent_id="tester",
            )
            context = AgentContext(InMemoryStore(), agent_id="tester", thread_id="t1")
            yield server, loop, context
        finally:
            with anyio.CancelScope(shield=True):
                await llm.aclose()


def roles(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(m["role"]) for m in messages]
