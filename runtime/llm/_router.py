"""The model router: which provider serves a request, and who takes over when it fails.

For each request the router

1. filters the providers by policy, in this order, recording the first reason each one fails:

   * **privacy**: a ``local_only`` request goes only to ``locality = "local"`` providers;
   * **capabilities**: a request with tools needs ``supports_tools``; a stream needs
     ``supports_streaming``;
   * **latency**: with a ``latency_budget_s``, ``typical_latency_s`` must fit in it;
   * **cost**: with a ``max_cost_usd``, the estimated cost must fit: prompt tokens (the JSON
     size of messages and tools / 4) at ``cost_per_1k_input``, plus ``max_tokens`` (when set)
     at ``cost_per_1k_output``;

2. tries the eligible providers in the configured order (the fallback chain), moving to the
   next when one raises an :class:`LLMError` (a timeout, a 429 or 5xx still failing after the
   provider's own retries, a refusal, an unreadable answer). A stream falls back only while
   opening; once chunks flow, an error is the caller's;

3. records everything in a :class:`RouteDecision`: as attributes of an ``llm.route`` span
   (the parent of the providers' ``chat {model}`` spans) and through the ``on_decision`` hook.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Literal

import msgspec
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import NoOpTracerProvider, Span, StatusCode, TracerProvider, use_span

from .._errors import InvalidArgument
from ..resilience import Policies
from ._anthropic import AnthropicProvider
from ._cache import CachedLLM
from ._cache_store import ResponseStore
from ._config import LLMConfig
from ._errors import LLMConfigError, LLMError, NoProviderAvailable, UnknownModel
from ._openai import OpenAIProvider
from ._protocol import LLM, RoutableLLM, build_provider
from ._types import Completion, CompletionRequest, StreamChunk

__all__ = ["ModelRouter", "Rejection", "RouteAttempt", "RouteDecision", "estimate_prompt_tokens"]

_log = logging.getLogger("loom.runtime.llm")
_encoder = msgspec.json.Encoder()


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """A provider the policies ruled out, and why."""

    provider: str
    reason: str


class RouteAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """One provider tried: ``outcome`` is ``ok`` or the error's class name."""

    provider: str
    outcome: str
    detail: str = ""


class RouteDecision(msgspec.Struct, frozen=True, kw_only=True):
    """How one request was routed.

    Attributes:
        operation: ``complete`` or ``stream``.
        chosen: the provider that served it ('' if none did).
        eligible: the providers that passed the policies, in the order they were to be tried.
        rejected: the providers the policies ruled out, with the reason.
        attempts: the providers tried, in order, with their outcome.
        estimated_prompt_tokens: the prompt size the cost policy used.
    """

    operation: Literal["complete", "stream"]
    chosen: str = ""
    eligible: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    attempts: tuple[RouteAttempt, ...] = ()
    estimated_prompt_tokens: int = 0

    @property
    def fallbacks(self) -> int:
        """How many times the router moved on to the next provider."""
        return max(len(self.attempts) - 1, 0)

    @property
    def reason(self) -> str:
        """The decision in one line, for humans."""
        parts = [f"{r.provider} rejected ({r.reason})" for r in self.rejected]
        parts += [f"{a.provider} failed ({a.outcome})" for a in self.attempts if a.outcome != "ok"]
        head = f"chose {self.chosen}" if self.chosen else "no provider served the request"
        return "; ".join([head, *parts])


def estimate_prompt_tokens(request: CompletionRequest) -> int:
    """A cheap, tokenizer-free estimate: the JSON size of messages and tools / 4, rounded up."""
    size = len(_encoder.encode(request.messages)) + len(_encoder.encode(request.tools))
    return -(-size // 4)


class ModelRouter:
    """An :class:`LLM` that routes each request to one of several providers.

    Args:
        providers: the providers, by name; each has a ``profile``.
        order: the fallback chain; defaults to the mapping's order. Providers not named are
            never used.
        tracer_provider: where ``llm.route`` spans go.
        on_decision: called with every :class:`RouteDecision` (the runtime publishes it as a
            debug event). It must not block; an exception from it is logged and ignored.
        name: this router's name as an :class:`LLM`.
        owns_providers: close the providers on :meth:`aclose`.
    """

    def __init__(
        self,
        providers: Mapping[str, RoutableLLM],
        *,
        order: Sequence[str] = (),
        tracer_provider: TracerProvider | None = None,
        on_decision: Callable[[RouteDecision], None] | None = None,
        name: str = "router",
        owns_providers: bool = False,
    ) -> None:
        self._providers = dict(providers)
        self._order = tuple(order) or tuple(self._providers)
        unknown = [n for n in self._order if n not in self._providers]
        if unknown:
            raise InvalidArgument(f"the router's order names unknown providers: {unknown}")
        self._tracer = (tracer_provider or NoOpTracerProvider()).get_tracer("loom.runtime.llm")
        self._listeners: list[Callable[[RouteDecision], None]] = (
            [on_decision] if on_decision is not None else []
        )
        self._name = name
        self._owns = owns_providers

    @classmethod
    def from_config(
        cls,
        config: LLMConfig,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        on_decision: Callable[[RouteDecision], None] | None = None,
        policies: Policies | None = None,
        cache: ResponseStore | None = None,
    ) -> ModelRouter:
        """A router over providers built from ``config``; it owns and closes them. With
        ``meter_provider``, each provider records its calls' durations. With ``policies``, a
        provider's ``policy`` names one of them (``<policy>@llm.<provider>``, its own state),
        and every provider's policy is counted among them (statistics, metrics). Each provider
        with ``cache = true`` is wrapped in a :class:`CachedLLM` over ``cache`` (the caller opens
        and closes the store), outside its policy: a cached answer takes no rate-limit token,
        concurrency slot or retry.

        Raises:
            LLMConfigError: a provider names a policy that ``policies`` does not define, or has
                ``cache = true`` and no ``cache`` store is given.
        """
        providers: dict[str, RoutableLLM] = {}
        for name, provider in config.providers.items():
            policy = None
            if provider.policy:
                if policies is None or provider.policy not in policies.configs:
                    raise LLMConfigError(
                        f"[llm.{name}] policy names {provider.policy!r}, "
                        "which no [policy.<name>] defines"
                    )
                policy = policies.make(provider.policy, f"llm.{name}")
            built = build_provider(
                name,
                provider,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                policy=policy,
            )
            if policies is not None and policy is None:
                policies.add(built.policy)
            providers[name] = _cached(built, cache)
        return cls(
            providers,
            order=config.order,
            tracer_provider=tracer_provider,
            on_decision=on_decision,
            owns_providers=True,
        )

    def add_decision_listener(self, listener: Callable[[RouteDecision], None]) -> None:
        """Also call ``listener`` with every decision (it must not block)."""
        self._listeners.append(listener)

    def remove_decision_listener(self, listener: Callable[[RouteDecision], None]) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def name(self) -> str:
        return self._name

    @property
    def providers(self) -> Mapping[str, RoutableLLM]:
        return self._providers

    @property
    def order(self) -> tuple[str, ...]:
        """The fallback chain: the providers' names, first tried first."""
        return self._order

    def route(self, model: str = "") -> LLM:
        """The model ``model`` names: ``""`` (or the router's own name) for the router, else
        the provider configured as ``[llm.<model>]`` (used directly, without fallback).

        Raises:
            UnknownModel: no provider has that name.
        """
        if not model or model == self._name:
            return self
        provider = self._providers.get(model)
        if provider is None:
            raise UnknownModel(model, self._order)
        return provider

    async def __aenter__(self) -> ModelRouter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the providers if the router owns them."""
        if not self._owns:
            return
        for provider in self._providers.values():
            aclose = getattr(provider, "aclose", None)
            if aclose is not None:
                await aclose()

    # ------------------------------------------------------------------ policies

    def _rejection(self, name: str, request: CompletionRequest, stream: bool, tokens: int) -> str:
        profile = self._providers[name].profile
        if request.local_only and profile.locality != "local":
            return "privacy: the request is local-only and the provider is remote"
        if request.tools and not profile.supports_tools:
            return "capability: the request has tools and the provider cannot call tools"
        if stream and not profile.supports_streaming:
            return "capability: streaming requested and the provider cannot stream"
        budget = request.latency_budget_s
        if budget is not None and profile.typical_latency_s > budget:
            return f"latency: typical {profile.typical_latency_s:g}s exceeds the budget {budget:g}s"
        cap = request.max_cost_usd
        if cap is not None:
            cost = tokens / 1000 * profile.cost_per_1k_input
            cost += (request.max_tokens or 0) / 1000 * profile.cost_per_1k_output
            if cost > cap:
                return f"cost: estimated ${cost:.6f} exceeds the cap ${cap:.6f}"
        return ""

    def _plan(self, request: CompletionRequest, stream: bool) -> RouteDecision:
        tokens = estimate_prompt_tokens(request)
        eligible: list[str] = []
        rejected: list[Rejection] = []
        for name in self._order:
            reason = self._rejection(name, request, stream, tokens)
            if reason:
                rejected.append(Rejection(provider=name, reason=reason))
            else:
                eligible.append(name)
        return RouteDecision(
            operation="stream" if stream else "complete",
            eligible=tuple(eligible),
            rejected=tuple(rejected),
            estimated_prompt_tokens=tokens,
        )

    def _publish(self, span: Span, decision: RouteDecision) -> None:
        span.set_attributes(
            {
                "loom.route.operation": decision.operation,
                "loom.route.chosen": decision.chosen,
                "loom.route.eligible": decision.eligible,
                "loom.route.rejected": tuple(
                    f"{r.provider}: {r.reason}" for r in decision.rejected
                ),
                "loom.route.attempts": tuple(
                    f"{a.provider}: {a.outcome}" for a in decision.attempts
                ),
                "loom.route.fallbacks": decision.fallbacks,
                "loom.route.estimated_prompt_tokens": decision.estimated_prompt_tokens,
                "loom.route.reason": decision.reason,
            }
        )
        if not decision.chosen:
            span.set_status(StatusCode.ERROR, decision.reason)
        _log.debug("llm route: %s", decision.reason)
        for listener in list(self._listeners):
            try:
                listener(decision)
            except Exception:
                _log.exception("an on_decision listener of router %r failed", self._name)

    def _give_up(self, decision: RouteDecision) -> NoProviderAvailable:
        return NoProviderAvailable(decision.reason, decision=decision)

    # ------------------------------------------------------------------ LLM

    async def complete(self, request: CompletionRequest) -> Completion:
        """The answer of the first eligible provider that succeeds.

        Raises:
            NoProviderAvailable: no provider was eligible, or all eligible ones failed
                (the last failure is its ``__cause__``).
        """
        decision = self._plan(request, stream=False)
        attempts: list[RouteAttempt] = []
        last: LLMError | None = None
        with self._tracer.start_as_current_span("llm.route") as span:
            try:
                for name in decision.eligible:
                    try:
                        completion = await self._providers[name].complete(request)
                    except LLMError as exc:
                        last = exc
                        attempts.append(_failed(name, exc))
                        continue
                    attempts.append(RouteAttempt(provider=name, outcome="ok"))
                    decision = msgspec.structs.replace(
                        decision, chosen=name, attempts=tuple(attempts)
                    )
                    return completion
                decision = msgspec.structs.replace(decision, attempts=tuple(attempts))
                raise self._give_up(decision) from last
            finally:
                # Also on cancellation: what was tried so far is still worth recording.
                decision = msgspec.structs.replace(decision, attempts=tuple(attempts))
                self._publish(span, decision)

    @asynccontextmanager
    async def stream(self, request: CompletionRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        """The stream of the first eligible provider that opens one; see :meth:`complete`."""
        decision = self._plan(request, stream=True)
        attempts: list[RouteAttempt] = []
        last: LLMError | None = None
        span = self._tracer.start_span("llm.route")
        try:
            for name in decision.eligible:
                stack = AsyncExitStack()
                try:
                    with use_span(span, end_on_exit=False):
                        chunks = await stack.enter_async_context(
                            self._providers[name].stream(request)
                        )
                except LLMError as exc:
                    last = exc
                    attempts.append(_failed(name, exc))
                    continue
                attempts.append(RouteAttempt(provider=name, outcome="ok"))
                decision = msgspec.structs.replace(decision, chosen=name)
                async with stack:
                    yield chunks
                return
            decision = msgspec.structs.replace(decision, attempts=tuple(attempts))
            raise self._give_up(decision) from last
        finally:
            decision = msgspec.structs.replace(decision, attempts=tuple(attempts))
            self._publish(span, decision)
            span.end()


def _cached(
    provider: OpenAIProvider | AnthropicProvider, store: ResponseStore | None
) -> RoutableLLM:
    # The one place the cache joins the router: outermost around the provider, so that a hit
    # skips everything the provider does (its retries, its concurrency slot, and any policy
    # or rate limit layered on it later).
    if not provider.config.cache:
        return provider
    if store is None:
        raise LLMConfigError(
            f"[llm.{provider.name}] cache = true needs a response store: loom serve keeps it in "
            "<data-dir>/llm_cache.sqlite3; in code pass ModelRouter.from_config(..., cache=store)"
        )
    return CachedLLM(provider, store)


def _failed(name: str, exc: LLMError) -> RouteAttempt:
    return RouteAttempt(provider=name, outcome=type(exc).__name__, detail=str(exc)[:300])
