"""The LLM response cache: a provider that answers an identical request from its past answers.

:class:`CachedLLM` wraps one provider (``[llm.<name>] cache = true``; ``ModelRouter.from_config``
wraps those given a :class:`~._cache_store.ResponseStore`). What it guarantees:

* **The key is the whole request.** It is the SHA-256 of a canonical encoding (msgpack, dict
  keys sorted) of: the calling namespace, the provider's name, every field of its
  :class:`ProviderConfig` that shapes what is sent (``kind``, ``model``, ``base_url``,
  ``max_output_tokens``...), and every field of the :class:`CompletionRequest` (messages, tools,
  tool choice, temperature, max tokens). Fields are left out by name, in two short lists of
  what is never sent (:data:`CONFIG_NOT_SENT`: credentials, timeouts, retries, routing facts;
  :data:`REQUEST_NOT_SENT`: the routing hints). Any field added later is in the key unless
  someone adds it to those lists, so nothing a provider sends can be missing from it.
* **Never across tenants.** The namespace of the caller (:func:`llm_namespace`, set by the
  bridge from the caller's tenant token and by the loop from its agent's id) is in the key,
  and stored with the row and checked again when it is read.
* **Never an error.** Only an answer that came back whole is stored: a call that raised, a
  stream that failed, was cancelled or was left before its last chunk, an answer that ended
  for another reason than ``stop`` or ``tool_calls`` (cut at ``max_tokens``, filtered), and
  one holding a tool call the model botched, are not.
* **A stream replays as a stream.** An answer stored from a stream keeps its chunks and
  replays them in order, then the :class:`StreamEnd`; one stored from ``complete`` replays as
  its text in one delta, then each tool call, then the end: the shape of a live stream.
* **A hit calls nothing.** No provider, no retry, no concurrency slot: the answer comes back
  with ``cached=True``, zero ``usage`` (no tokens were billed) and the tokens it saved counted
  in :meth:`CachedLLM.cache_statistics`. So whatever is layered *inside* the wrapper (a rate
  limit, a circuit breaker) is not consumed by a hit, and a budget that counts ``usage``
  counts nothing for it.
* **The cache never fails a call.** A lookup or store that fails (a full disk) is logged and
  counted (``store_errors``); the call goes to the provider as if the cache were not there.

Two identical requests in flight at once both miss and both call the model (there is no
single flight); the second answer to arrive replaces the first.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from contextvars import ContextVar
from hashlib import sha256
from typing import Any, Final, Protocol, runtime_checkable

import anyio
import msgspec

from ._cache_store import CacheLimits, CacheStoreError, ResponseStore
from ._config import ProviderConfig, ProviderProfile
from ._errors import BadToolCall
from ._provider import ProviderStats
from ._types import (
    Completion,
    CompletionRequest,
    StreamChunk,
    StreamEnd,
    TextDelta,
    ToolCallReady,
    Usage,
)

__all__ = [
    "CONFIG_NOT_SENT",
    "REQUEST_NOT_SENT",
    "CacheStats",
    "CacheableLLM",
    "CachedLLM",
    "cache_key",
    "calling_namespace",
    "llm_namespace",
]

_log = logging.getLogger("loom.runtime.llm")

CONFIG_NOT_SENT: Final = frozenset(
    {
        "api_key",
        "api_key_env",
        "timeout_s",
        "max_retries",
        "backoff_base_s",
        "backoff_max_s",
        "retry_after_max_s",
        "max_concurrency",
        "policy",
        "locality",
        "cost_per_1k_input",
        "cost_per_1k_output",
        "typical_latency_s",
        "supports_tools",
        "supports_streaming",
        "cache",
        "cache_ttl_s",
        "cache_max_entries",
        "cache_max_bytes",
    }
)
"""The fields of :class:`ProviderConfig` that never reach the model, so not in the key."""

REQUEST_NOT_SENT: Final = frozenset({"timeout_s", "local_only", "latency_budget_s", "max_cost_usd"})
"""The fields of :class:`CompletionRequest` that never reach the model (the deadline and the
router's hints), so not in the key: a remote caller's deadline differs on every call."""

_KEY_VERSION: Final = 1
_CACHEABLE_FINISH: Final = frozenset({"stop", "tool_calls"})

_namespace: ContextVar[str] = ContextVar("loom_llm_namespace", default="")


@contextmanager
def llm_namespace(namespace: str | None) -> Iterator[None]:
    """Make the model calls made inside the block (in this task and the tasks it starts)
    calls of tenant ``namespace`` (``None`` or ``""``: no tenant). The cache never serves one
    namespace an answer cached for another."""
    token = _namespace.set(namespace or "")
    try:
        yield
    finally:
        _namespace.reset(token)


def calling_namespace() -> str:
    """The namespace of the model calls made here ('' for none): see :func:`llm_namespace`."""
    return _namespace.get()


def _enc_hook(obj: Any) -> Any:
    # A botched tool call in the history carries its error (an exception): key it by kind and
    # text, which is all that reaches the model (the call goes back with empty arguments).
    if isinstance(obj, BadToolCall):
        return (type(obj).__name__, str(obj))
    raise NotImplementedError(f"cannot key an object of type {type(obj).__name__}")


_key_encoder = msgspec.msgpack.Encoder(order="deterministic", enc_hook=_enc_hook)
_HINTS_UNSET: Final = {
    field.name: field.default
    for field in msgspec.structs.fields(CompletionRequest)
    if field.name in REQUEST_NOT_SENT
}


def _sent_config(config: ProviderConfig) -> dict[str, Any]:
    return {
        name: getattr(config, name)
        for name in ProviderConfig.__struct_fields__
        if name not in CONFIG_NOT_SENT
    }


def cache_key(
    request: CompletionRequest, *, provider: str, config: ProviderConfig, namespace: str = ""
) -> bytes:
    """The cache key of ``request`` sent to ``provider`` (configured by ``config``) by a caller
    of ``namespace``: a SHA-256 digest (see the module docs for what goes in)."""
    return _digest(namespace, provider, _sent_config(config), request)


def _digest(
    namespace: str, provider: str, sent_config: dict[str, Any], request: CompletionRequest
) -> bytes:
    sent = msgspec.structs.replace(request, **_HINTS_UNSET)
    material = (_KEY_VERSION, namespace, provider, sent_config, sent)
    return sha256(_key_encoder.encode(material)).digest()


class CacheStats(msgspec.Struct, frozen=True, kw_only=True):
    """One cached provider's counters since it was made, and what it holds now.

    Attributes:
        hits: calls answered from the cache.
        misses: calls that went to the provider.
        stores: answers stored.
        not_stored: answers that came back but were not stored (cut short, not ``stop`` or
            ``tool_calls``, a botched tool call, a stream left early, larger than the bound).
        evictions: rows deleted to keep within ``cache_max_entries`` / ``cache_max_bytes``.
        expirations: rows deleted because their ``cache_ttl_s`` had passed.
        store_errors: lookups or stores the cache file failed (the call went on uncached).
        saved_prompt_tokens: prompt tokens the hits did not spend (as first reported).
        saved_completion_tokens: generated tokens the hits did not spend.
        entries: rows the provider holds now (every namespace).
        bytes: their encoded size.
    """

    hits: int = 0
    misses: int = 0
    stores: int = 0
    not_stored: int = 0
    evictions: int = 0
    expirations: int = 0
    store_errors: int = 0
    saved_prompt_tokens: int = 0
    saved_completion_tokens: int = 0
    entries: int = 0
    bytes: int = 0


class _Entry(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A stored answer: the completion and the chunks before its end, in order."""

    completion: Completion
    chunks: tuple[TextDelta | ToolCallReady, ...]


_entry_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(_Entry)


@runtime_checkable
class CacheableLLM(Protocol):
    """What :class:`CachedLLM` wraps: a provider, with its config and statistics."""

    @property
    def name(self) -> str: ...

    @property
    def profile(self) -> ProviderProfile: ...

    @property
    def config(self) -> ProviderConfig: ...

    def statistics(self) -> ProviderStats: ...

    async def complete(self, request: CompletionRequest) -> Completion: ...

    def stream(
        self, request: CompletionRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamChunk]]: ...

    async def aclose(self) -> None: ...


class CachedLLM:
    """``provider``, with its answers kept in ``store`` and served again to identical requests.

    An :class:`~loom.runtime.llm.RoutableLLM` itself (the router holds it in the provider's
    place); its ``statistics()`` are the provider's, :meth:`cache_statistics` its own. The
    bounds and TTL are the provider's ``cache_*`` settings. :meth:`aclose` closes the provider,
    not the store (the store is shared by every cached provider of a server).
    """

    def __init__(self, provider: CacheableLLM, store: ResponseStore) -> None:
        config = provider.config
        self._inner = provider
        self._store = store
        self._name = provider.name
        self._sent_config = _sent_config(config)
        self._limits = CacheLimits(
            ttl_s=config.cache_ttl_s,
            max_entries=config.cache_max_entries,
            max_bytes=config.cache_max_bytes,
        )
        self._counts: dict[str, int] = dict.fromkeys(CacheStats.__struct_fields__, 0)

    @property
    def name(self) -> str:
        return self._name

    @property
    def profile(self) -> ProviderProfile:
        return self._inner.profile

    @property
    def config(self) -> ProviderConfig:
        return self._inner.config

    @property
    def provider(self) -> CacheableLLM:
        """The provider it wraps (a miss calls it)."""
        return self._inner

    def statistics(self) -> ProviderStats:
        """The provider's counters (hits never reach it, so never count there)."""
        return self._inner.statistics()

    def cache_statistics(self) -> CacheStats:
        """A snapshot of this provider's cache counters."""
        entries, size = self._store.usage(self._name)
        return CacheStats(**{**self._counts, "entries": entries, "bytes": size})

    def __repr__(self) -> str:
        return f"CachedLLM({self._inner!r}, store={str(self._store.path)!r})"

    async def __aenter__(self) -> CachedLLM:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._inner.aclose()

    # ------------------------------------------------------------------ the cache

    def _key(self, request: CompletionRequest) -> bytes:
        return _digest(calling_namespace(), self._name, self._sent_config, request)

    async def _lookup(self, key: bytes) -> _Entry | None:
        try:
            blob, expired = await self._store.get(key, calling_namespace())
        except CacheStoreError as exc:
            self._counts["store_errors"] += 1
            _log.warning("llm %s: cache lookup failed, calling the model: %s", self._name, exc)
            blob, expired = None, False
        if expired:
            self._counts["expirations"] += 1
        entry = None
        if blob is not None:
            try:
                entry = _entry_decoder.decode(blob)
            except msgspec.DecodeError:  # written by another version: a miss, then replaced
                entry = None
        if entry is None:
            self._counts["misses"] += 1
            return None
        self._counts["hits"] += 1
        usage = entry.completion.usage
        self._counts["saved_prompt_tokens"] += usage.prompt_tokens
        self._counts["saved_completion_tokens"] += usage.completion_tokens
        return entry

    def _served(self, entry: _Entry, start: float) -> Completion:
        return msgspec.structs.replace(
            entry.completion,
            usage=Usage(),
            provider=self._name,
            latency_s=anyio.current_time() - start,
            cached=True,
        )

    async def _keep(
        self, key: bytes, completion: Completion, chunks: tuple[TextDelta | ToolCallReady, ...]
    ) -> None:
        if completion.finish_reason not in _CACHEABLE_FINISH or any(
            call.error is not None for call in completion.tool_calls
        ):
            self._counts["not_stored"] += 1
            return
        stored = msgspec.structs.replace(completion, latency_s=0.0, cached=False)
        blob = _entry_encoder.encode(_Entry(completion=stored, chunks=chunks))
        try:
            # Shielded: once the answer is ours, a cancellation arriving now must not leave
            # the row half decided (the thread finishes anyway; this keeps the counts true).
            with anyio.CancelScope(shield=True):
                outcome = await self._store.put(
                    key,
                    provider=self._name,
                    namespace=calling_namespace(),
                    entry=blob,
                    limits=self._limits,
                )
        except CacheStoreError as exc:
            self._counts["store_errors"] += 1
            _log.warning("llm %s: the answer could not be cached: %s", self._name, exc)
            return
        self._counts["stores" if outcome.stored else "not_stored"] += 1
        self._counts["evictions"] += outcome.evicted
        self._counts["expirations"] += outcome.expired

    # ------------------------------------------------------------------ LLM

    async def complete(self, request: CompletionRequest) -> Completion:
        """The cached answer to ``request``, or the provider's (then cached)."""
        start = anyio.current_time()
        key = self._key(request)
        entry = await self._lookup(key)
        if entry is not None:
            return self._served(entry, start)
        completion = await self._inner.complete(request)
        await self._keep(key, completion, _chunks_of(completion))
        return completion

    @asynccontextmanager
    async def stream(self, request: CompletionRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        """The cached answer replayed as a stream, or the provider's stream (cached once it
        has been read to its end and the block left without an error)."""
        start = anyio.current_time()
        key = self._key(request)
        entry = await self._lookup(key)
        if entry is not None:
            yield _replay(entry.chunks, self._served(entry, start))
            return
        async with self._inner.stream(request) as chunks:
            recorder = _Recorder(chunks)
            yield recorder
        # Reached only when the block ended without an error (an exception skips this).
        if recorder.completion is not None:
            await self._keep(key, recorder.completion, tuple(recorder.chunks))
        else:
            self._counts["not_stored"] += 1


def _chunks_of(completion: Completion) -> tuple[TextDelta | ToolCallReady, ...]:
    """The chunks a live stream of ``completion`` would have had before its end."""
    text = (TextDelta(text=completion.text),) if completion.text else ()
    return text + tuple(ToolCallReady(call=call) for call in completion.tool_calls)


async def _replay(
    chunks: tuple[TextDelta | ToolCallReady, ...], completion: Completion
) -> AsyncIterator[StreamChunk]:
    for chunk in chunks:
        yield chunk
    yield StreamEnd(completion=completion)


class _Recorder:
    """Passes a live stream's chunks through, keeping them and the final completion."""

    def __init__(self, chunks: AsyncIterator[StreamChunk]) -> None:
        self._chunks = chunks
        self.chunks: list[TextDelta | ToolCallReady] = []
        self.completion: Completion | None = None

    def __aiter__(self) -> _Recorder:
        return self

    async def __anext__(self) -> StreamChunk:
        chunk = await self._chunks.__anext__()
        match chunk:
            case StreamEnd(completion=completion):
                self.completion = completion
            case TextDelta() | ToolCallReady():
                self.chunks.append(chunk)
        return chunk
