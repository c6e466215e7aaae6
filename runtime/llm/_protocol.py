"""The ``LLM`` seam, owned by the layer that calls models (the perceive-think-act loop)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ..resilience import Policy
from ._anthropic import AnthropicProvider
from ._config import ProviderConfig, ProviderProfile
from ._openai import OpenAIProvider
from ._types import Completion, CompletionRequest, StreamChunk

__all__ = ["LLM", "RoutableLLM", "build_provider"]


@runtime_checkable
class LLM(Protocol):
    """Something that answers completion requests: a provider, or the router over several.

    Both methods are cancel-safe: cancelling a call closes its connection and leaves nothing
    running. Errors are :class:`~loom.runtime.llm.LLMError` subclasses; a bad tool call made
    by the model is not an error of the call but ``call.error`` on the returned
    :class:`~loom.runtime.llm.ToolCall`.
    """

    @property
    def name(self) -> str:
        """The name it is configured under (``[llm.<name>]``), or ``router``."""
        ...

    async def complete(self, request: CompletionRequest) -> Completion:
        """The whole answer to ``request``."""
        ...

    def stream(
        self, request: CompletionRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]:
        """The answer to ``request`` as it is generated.

        ``async with llm.stream(request) as chunks: async for chunk in chunks: ...``: text
        deltas, each tool call once it is whole, and last a
        :class:`~loom.runtime.llm.StreamEnd` with the full completion. Errors that happen
        before the stream opens (refused, rate limited, unreachable) are raised by ``async
        with``; those after, by the iteration.
        """
        ...


@runtime_checkable
class RoutableLLM(LLM, Protocol):
    """An :class:`LLM` with the facts the router chooses by."""

    @property
    def profile(self) -> ProviderProfile: ...


def build_provider(
    name: str,
    config: ProviderConfig,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    policy: Policy | None = None,
) -> OpenAIProvider | AnthropicProvider:
    """The provider ``config.kind`` names. Close it with ``aclose()`` (or ``async with``).
    ``policy`` guards its calls (``None``: the default one of its fields)."""
    if config.kind == "anthropic":
        return AnthropicProvider(
            name,
            config,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            policy=policy,
        )
    return OpenAIProvider(
        name, config, tracer_provider=tracer_provider, meter_provider=meter_provider, policy=policy
    )
