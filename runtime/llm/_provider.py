"""What every provider shares: deadlines, retries, concurrency, statistics and the span.

A subclass only speaks its wire: build the SDK call for one attempt, read the SDK's answer or
stream, and map the SDK's exceptions to :mod:`._errors`. The SDKs' own retries are switched off
(``max_retries=0``) so that one policy applies to every provider: a resilience policy
(``loom.runtime.resilience.Policy``, the same mechanism that guards tools and requests), by
default the one :func:`default_policy` makes of the provider's own fields:

* 429, 5xx and connection errors are retried up to ``max_retries`` times; everything else
  (400, 401, a response we cannot read) fails at once. A completion request has no effect
  besides its answer: every call is idempotent.
* The wait before retry ``n`` (from 0) is uniform in ``[0, min(backoff_max_s,
  backoff_base_s * 2**n)]`` ("full jitter"), or the provider's ``Retry-After`` capped at
  ``retry_after_max_s`` when it sent one.
* ``timeout_s`` is the deadline of the whole call: waiting for a concurrency slot, every
  attempt and every backoff. A retry whose wait would end past the deadline is not made; the
  error that prompted it is raised instead. When the deadline itself passes,
  :class:`ProviderTimeout` is raised.

A policy named in ``[llm.<name>] policy = "..."`` replaces the default one (and with it
``max_retries``, the backoffs and ``max_concurrency``); its circuit breaker, when open, fails
calls at once with :class:`ProviderUnavailable`, so a router moves on to the next provider.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
import msgspec
from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.trace import NoOpTracerProvider, Span, SpanKind, StatusCode, TracerProvider

from ..resilience import CircuitOpen, Policy, PolicyConfig, Retry
from ._assemble import StreamAssembler
from ._config import ProviderConfig, ProviderProfile
from ._errors import (
    BadResponse,
    LLMError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RequestRejected,
)
from ._toolnames import ToolNameMap
from ._types import Completion, CompletionRequest, StreamChunk, StreamEnd

__all__ = ["ErrorCounts", "ProviderBase", "ProviderStats", "default_policy"]

_log = logging.getLogger("loom.runtime.llm")

_S = TypeVar("_S")
_T = TypeVar("_T")


class ErrorCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Failed attempts of a provider, by kind (a retried 429 counts once per attempt)."""

    rate_limited: int = 0
    timeout: int = 0
    unavailable: int = 0
    rejected: int = 0
    bad_response: int = 0

    @property
    def total(self) -> int:
        return (
            self.rate_limited + self.timeout + self.unavailable + self.rejected + self.bad_response
        )


class ProviderStats(msgspec.Struct, frozen=True, kw_only=True):
    """One provider's counters since it was made.

    Attributes:
        calls: calls started (``complete`` and ``stream``).
        succeeded: calls that returned a completion or opened a stream.
        failed: calls that raised.
        retries: attempts made after a first one failed.
        errors: failed attempts by kind.
        prompt_tokens: prompt tokens reported by the provider, summed.
        completion_tokens: generated tokens reported by the provider, summed.
    """

    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    errors: ErrorCounts = ErrorCounts()
    prompt_tokens: int = 0
    completion_tokens: int = 0


_KIND_OF: dict[type[LLMError], str] = {
    RateLimited: "rate_limited",
    ProviderTimeout: "timeout",
    ProviderUnavailable: "unavailable",
    RequestRejected: "rejected",
    BadResponse: "bad_response",
}
_RETRYABLE = (RateLimited, ProviderUnavailable, ProviderTimeout)


def _kind(exc: LLMError) -> str:
    for cls in type(exc).__mro__:
        if cls in _KIND_OF:
            return _KIND_OF[cls]
    return "bad_response"


def _outcome(exc: Exception) -> str:
    """The ``outcome`` label of a failed call: its error kind (``ErrorCounts``' fields)."""
    return _kind(exc) if isinstance(exc, LLMError) else "failed"


def default_policy(name: str, config: ProviderConfig) -> Policy:
    """The policy of a provider given none: its own retry and concurrency fields, as a
    :class:`~loom.runtime.resilience.Policy` named ``default@llm.<name>``."""
    return Policy(
        f"default@llm.{name}",
        PolicyConfig(
            retry=Retry(
                policy="exponential",
                duration=config.backoff_base_s,
                max_interval=config.backoff_max_s,
                max_retries=config.max_retries,
                retry_after_max=config.retry_after_max_s,
            ),
            max_concurrency=config.max_concurrency,
        ),
    )


class _Outcomes:
    """How a provider's errors read to its policy."""

    __slots__ = ("_provider",)

    def __init__(self, provider: ProviderBase[Any]) -> None:
        self._provider = provider

    def failure(self, exc: Exception) -> bool:
        # The provider's fault, not the request's: what a breaker should count.
        return isinstance(exc, (*_RETRYABLE, BadResponse))

    def transient(self, exc: Exception) -> bool:
        return isinstance(exc, _RETRYABLE)

    def retry_after(self, exc: Exception) -> float | None:
        return exc.retry_after if isinstance(exc, RateLimited) else None

    def timed_out(self, seconds: float) -> Exception:
        return self._provider._timeout_error(seconds)

    def refused(self, exc: CircuitOpen) -> Exception:
        return ProviderUnavailable(str(exc), provider=self._provider.name)


class ProviderBase(ABC, Generic[_S]):
    """The shared machinery of a provider; ``_S`` is the SDK's stream type.

    Args:
        name: the provider's name (its ``[llm.<name>]``).
        config: its configuration; the API key is taken from ``config.api_key``.
        tracer_provider: where ``chat {model}`` spans go; none are made without one.
        meter_provider: where each call's duration goes (``loom.llm.duration``, by provider,
            model and outcome); nothing is recorded without one. The counts and tokens need
            none: :meth:`statistics` keeps them.
        policy: the resilience policy of its calls (``None``: :func:`default_policy`).
    """

    system: str = ""
    """The ``gen_ai.system`` value of this provider's spans."""

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        policy: Policy | None = None,
    ) -> None:
        self._name = name
        self._config = config
        self._tracer = (tracer_provider or NoOpTracerProvider()).get_tracer("loom.runtime.llm")
        self._duration: Histogram | None = None
        if meter_provider is not None:
            self._duration = meter_provider.get_meter("loom.runtime.llm").create_histogram(
                "loom.llm.duration", unit="s", description="Model calls, by how they ended"
            )
        self._labels = {"provider": name, "model": config.model}
        self._policy = policy if policy is not None else default_policy(name, config)
        self._outcomes = _Outcomes(self)
        self._stats = ProviderStats()
        self._errors: dict[str, int] = dict.fromkeys(ErrorCounts.__struct_fields__, 0)

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> ProviderConfig:
        return self._config

    @property
    def profile(self) -> ProviderProfile:
        return self._config.profile

    @property
    def policy(self) -> Policy:
        """The resilience policy of this provider's calls."""
        return self._policy

    def statistics(self) -> ProviderStats:
        """A snapshot of this provider's counters."""
        return msgspec.structs.replace(self._stats, errors=ErrorCounts(**self._errors))

    def __repr__(self) -> str:
        c = self._config
        return (
            f"{type(self).__name__}(name={self._name!r}, model={c.model!r}, "
            f"base_url={c.base_url!r})"
        )

    async def __aenter__(self) -> ProviderBase[_S]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @abstractmethod
    async def aclose(self) -> None:
        """Close the SDK client and its connections."""

    # ------------------------------------------------------------------ wire (subclasses)

    @abstractmethod
    async def _attempt(
        self, request: CompletionRequest, names: ToolNameMap, timeout: float
    ) -> Completion:
        """One non-streaming attempt; raises a mapped :class:`LLMError`."""

    @abstractmethod
    async def _open_stream(
        self, request: CompletionRequest, names: ToolNameMap, timeout: float
    ) -> _S:
        """One attempt at opening a stream (up to the response headers)."""

    @abstractmethod
    def _read_stream(
        self, stream: _S, assembler: StreamAssembler
    ) -> AsyncGenerator[StreamChunk, None]:
        """The chunks of an open stream, fed through ``assembler`` (without its ``finish``)."""

    @abstractmethod
    async def _close_stream(self, stream: _S) -> None:
        """Release an open stream's connection."""

    @abstractmethod
    def _map_error(self, exc: Exception) -> LLMError | None:
        """The :class:`LLMError` for an SDK exception, or ``None`` if it is not the SDK's."""

    # ------------------------------------------------------------------ shared machinery

    def _redact(self, text: str) -> str:
        key = self._config.api_key.reveal()
        return text.replace(key, "***") if key else text

    def _attempts(self, attempt: Callable[[], Awaitable[_T]]) -> Callable[[], Awaitable[_T]]:
        """``attempt`` with its errors mapped and counted by kind, and each one after the
        first counted as a retry."""
        made = 0

        async def once() -> _T:
            nonlocal made
            made += 1
            if made > 1:
                _log.debug("llm %s: retry %d", self._name, made - 1)
                self._stats = msgspec.structs.replace(self._stats, retries=self._stats.retries + 1)
            try:
                return await attempt()
            except LLMError as exc:
                error = exc
            except Exception as exc:
                error = self._mapped(exc)
            self._errors[_kind(error)] += 1
            raise error from None

        return once

    def _mapped(self, exc: Exception) -> LLMError:
        mapped = self._map_error(exc)
        if mapped is None:
            raise exc
        if mapped.args:
            mapped.args = (self._redact(str(mapped.args[0])), *mapped.args[1:])
        return mapped

    def _start_span(self, request: CompletionRequest, operation: str) -> Span:
        attributes: dict[str, str | int | float | bool] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": self.system,
            "gen_ai.provider.name": self.system,
            "gen_ai.request.model": self._config.model,
            "loom.llm.provider": self._name,
            "loom.llm.operation": operation,
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        return self._tracer.start_span(
            f"chat {self._config.model}", kind=SpanKind.CLIENT, attributes=attributes
        )

    def _timed(self, start: float, outcome: str) -> None:
        # One record per call, only with a meter: the histogram's count is the calls.
        if self._duration is not None:
            self._duration.record(
                anyio.current_time() - start, {**self._labels, "outcome": outcome}
            )

    def _record_success(self, span: Span, completion: Completion) -> None:
        usage = completion.usage
        self._stats = msgspec.structs.replace(
            self._stats,
            succeeded=self._stats.succeeded + 1,
            prompt_tokens=self._stats.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._stats.completion_tokens + usage.completion_tokens,
        )
        span.set_attributes(
            {
                "gen_ai.response.model": completion.model,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "gen_ai.response.finish_reasons": (completion.finish_reason,),
            }
        )

    def _record_failure(self, span: Span, exc: BaseException) -> None:
        self._stats = msgspec.structs.replace(self._stats, failed=self._stats.failed + 1)
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(StatusCode.ERROR, str(exc))

    def _timeout_error(self, timeout: float) -> ProviderTimeout:
        self._errors["timeout"] += 1
        return ProviderTimeout(f"no answer within {timeout:g}s", provider=self._name)

    async def complete(self, request: CompletionRequest) -> Completion:
        """Send ``request`` and return the whole answer.

        Raises:
            RateLimited, ProviderUnavailable: still failing after the retries.
            RequestRejected: the provider refused the request.
            BadResponse: the answer could not be read.
            ProviderTimeout: the deadline passed.
        """
        timeout = request.timeout_s or self._config.timeout_s
        names = ToolNameMap(tool.name for tool in request.tools)
        self._stats = msgspec.structs.replace(self._stats, calls=self._stats.calls + 1)
        span = self._start_span(request, "complete")
        start = anyio.current_time()
        deadline = start + timeout
        try:
            try:
                with anyio.fail_after(timeout):
                    completion = await self._policy.call(
                        self._attempts(
                            lambda: self._attempt(request, names, deadline - anyio.current_time())
                        ),
                        idempotent=True,
                        outcomes=self._outcomes,
                    )
            except ProviderTimeout:
                raise
            except TimeoutError:
                raise self._timeout_error(timeout) from None
            completion = msgspec.structs.replace(
                completion, latency_s=anyio.current_time() - start, provider=self._name
            )
        except Exception as exc:
            self._record_failure(span, exc)
            self._timed(start, _outcome(exc))
            raise
        else:
            self._record_success(span, completion)
            self._timed(start, "ok")
            return completion
        finally:
            span.end()

    @asynccontextmanager
    async def stream(self, request: CompletionRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        """Send ``request`` and stream the answer.

        Use as ``async with provider.stream(request) as chunks: async for chunk in chunks``.
        Opening the stream (up to the response headers) is retried and bounded by
        ``timeout_s`` like :meth:`complete`; once open, ``timeout_s`` bounds each wait for
        the next chunk instead (an idle timeout), so a long answer may take longer in all.
        The last chunk is a :class:`StreamEnd` with the whole completion. Leaving the block
        early closes the connection.
        """
        timeout = request.timeout_s or self._config.timeout_s
        names = ToolNameMap(tool.name for tool in request.tools)
        self._stats = msgspec.structs.replace(self._stats, calls=self._stats.calls + 1)
        span = self._start_span(request, "stream")
        start = anyio.current_time()
        deadline = start + timeout
        # Entered by hand: the policy's concurrency slot stays held until the stream closes.
        opening = self._policy.opened(
            self._attempts(
                lambda: self._open_stream(request, names, deadline - anyio.current_time())
            ),
            idempotent=True,
            outcomes=self._outcomes,
        )
        try:
            try:
                with anyio.fail_after(timeout):
                    sdk_stream = await opening.__aenter__()
            except ProviderTimeout:
                raise
            except TimeoutError:
                raise self._timeout_error(timeout) from None
        except Exception as exc:
            self._record_failure(span, exc)
            self._timed(start, _outcome(exc))
            span.end()
            raise
        chunks = _ChunkStream(
            self, sdk_stream, StreamAssembler(names, provider=self._name), timeout, start
        )
        failure: BaseException | None = None
        try:
            yield chunks
        except BaseException as exc:
            failure = exc
            if isinstance(exc, Exception):
                self._record_failure(span, exc)
                self._timed(start, _outcome(exc))
            raise
        else:
            self._timed(start, "ok")
            if chunks.completion is not None:
                self._record_success(span, chunks.completion)
            else:
                # The caller left before the end: the call did not fail, but has no usage.
                self._stats = msgspec.structs.replace(
                    self._stats, succeeded=self._stats.succeeded + 1
                )
        finally:
            try:
                # Closing awaits; it must run even when we are being cancelled, but not hang.
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await chunks.aclose()
                    await self._close_stream(sdk_stream)
            finally:
                # No await inside: it releases the slot and counts the call, even when cancelled.
                if failure is None:
                    await opening.__aexit__(None, None, None)
                else:
                    await opening.__aexit__(type(failure), failure, failure.__traceback__)
                span.end()


class _ChunkStream(Generic[_S]):
    """The iterator handed out by :meth:`ProviderBase.stream`."""

    def __init__(
        self,
        provider: ProviderBase[_S],
        sdk_stream: _S,
        assembler: StreamAssembler,
        idle_timeout: float,
        start: float,
    ) -> None:
        self._provider = provider
        self._reader = provider._read_stream(sdk_stream, assembler)
        self._assembler = assembler
        self._idle_timeout = idle_timeout
        self._start = start
        self._queued: list[StreamChunk] = []
        self._done = False
        self.completion: Completion | None = None

    def __aiter__(self) -> _ChunkStream[_S]:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._queued:
            return self._queued.pop(0)
        if self._done:
            raise StopAsyncIteration
        try:
            with anyio.fail_after(self._idle_timeout):
                chunk = await self._reader.__anext__()
        except StopAsyncIteration:
            self._done = True
            latency = anyio.current_time() - self._start
            self._queued = self._assembler.finish(latency_s=latency)
            end = self._queued[-1]
            assert isinstance(end, StreamEnd)
            self.completion = end.completion
            return self._queued.pop(0)
        except LLMError:
            self._done = True
            raise
        except TimeoutError:
            self._done = True
            raise self._provider._timeout_error(self._idle_timeout) from None
        except Exception as exc:
            self._done = True
            error = self._provider._mapped(exc)
            self._provider._errors[_kind(error)] += 1
            raise error from None
        return chunk

    async def aclose(self) -> None:
        self._done = True
        await self._reader.aclose()
