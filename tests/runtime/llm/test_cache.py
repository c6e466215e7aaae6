"""The LLM response cache against the scripted server: hits with the server gone, exact keys,
nothing cached that failed, expiry, bounds, tenants, statistics, a reopened file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from loom.runtime.llm import (
    CACHE_FILENAME,
    AssistantMessage,
    CachedLLM,
    CacheStats,
    CompletionRequest,
    LLMConfigError,
    MalformedToolArguments,
    ModelRouter,
    OpenAIProvider,
    ProviderConfig,
    ProviderUnavailable,
    RequestRejected,
    ResponseStore,
    StreamChunk,
    StreamEnd,
    SystemMessage,
    TextDelta,
    ToolCall,
    ToolCallReady,
    ToolSpec,
    UserMessage,
    cache_key,
    llm_namespace,
    load_llm_config,
)
from loom.runtime.llm._cache import CONFIG_NOT_SENT, REQUEST_NOT_SENT
from loom.runtime.testing import HTTPError, Reply, ScriptedLLMServer, ScriptedToolCall

from .conftest import config_for

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

PLAIN = CompletionRequest(messages=(UserMessage(content="what is the capital of France?"),))
TOOL = ToolSpec(
    name="geo.lookup",
    description="Look a place up",
    parameters_schema={"type": "object", "properties": {"q": {"type": "string"}}},
)


def request(**fields: Any) -> CompletionRequest:
    return msgspec.structs.replace(PLAIN, **fields)


class Clock:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[ResponseStore]:
    async with ResponseStore(tmp_path / CACHE_FILENAME, clock=clock) as s:
        yield s


def cached(server: ScriptedLLMServer, store: ResponseStore, **fields: Any) -> CachedLLM:
    config = config_for(server, cache=True, max_retries=0, **fields)
    return CachedLLM(OpenAIProvider("scripted", config), store)


async def collect(llm: CachedLLM, req: CompletionRequest) -> list[StreamChunk]:
    async with llm.stream(req) as chunks:
        return [chunk async for chunk in chunks]


# ---------------------------------------------------------------------- hits


async def test_a_hit_answers_with_the_server_stopped(store: ResponseStore) -> None:
    with anyio.fail_after(20):
        server = ScriptedLLMServer(
            [Reply(text="Paris.", tool_calls=[ScriptedToolCall(name="geo_lookup")])]
        )
        async with server, cached(server, store) as llm:
            first = await llm.complete(request(tools=(TOOL,)))
        assert server.requests
        assert not first.cached
        # The server is closed: only the cache can answer now.
        async with cached(server, store) as llm:
            again = await llm.complete(request(tools=(TOOL,)))
            assert again.cached
            assert (again.text, again.tool_calls) == (first.text, first.tool_calls)
            assert again.finish_reason == first.finish_reason
            assert again.model == first.model
            assert again.usage.total_tokens == 0  # nothing was billed for it
            stats = llm.cache_statistics()
        assert (stats.hits, stats.misses, stats.stores) == (1, 0, 0)
        assert stats.saved_prompt_tokens == first.usage.prompt_tokens > 0
        assert stats.saved_completion_tokens == first.usage.completion_tokens > 0


@pytest.mark.openai_stream
async def test_a_cached_stream_replays_its_chunks_with_the_server_stopped(
    store: ResponseStore,
) -> None:
    with anyio.fail_after(20):
        server = ScriptedLLMServer([Reply(text="The capital is Paris.", chunk_size=5)])
        async with server, cached(server, store) as llm:
            live = await collect(llm, PLAIN)
        async with cached(server, store) as llm:
            replayed = await collect(llm, PLAIN)
            # A completion asked the same thing gets the streamed answer too.
            whole = await llm.complete(PLAIN)
    assert [type(c) for c in replayed] == [type(c) for c in live]
    assert [c for c in replayed if isinstance(c, TextDelta)] == [
        c for c in live if isinstance(c, TextDelta)
    ]
    assert len([c for c in live if isinstance(c, TextDelta)]) > 1
    end_live, end_replayed = live[-1], replayed[-1]
    assert isinstance(end_live, StreamEnd)
    assert isinstance(end_replayed, StreamEnd)
    assert end_replayed.completion.cached
    assert not end_live.completion.cached
    assert end_replayed.completion.text == end_live.completion.text == whole.text


async def test_a_cached_completion_replays_as_a_stream(store: ResponseStore) -> None:
    with anyio.fail_after(20):
        server = ScriptedLLMServer(
            [Reply(text="Looking.", tool_calls=[ScriptedToolCall(name="geo_lookup")])]
        )
        async with server, cached(server, store) as llm:
            first = await llm.complete(request(tools=(TOOL,)))
        async with cached(server, store) as llm:
            chunks = await collect(llm, request(tools=(TOOL,)))
    assert [type(c) for c in chunks] == [TextDelta, ToolCallReady, StreamEnd]
    assert isinstance(chunks[1], ToolCallReady)
    assert chunks[1].call == first.tool_calls[0]
    assert isinstance(chunks[-1], StreamEnd)
    assert chunks[-1].completion.text == "Looking."


async def test_the_cache_outlives_its_file_being_closed(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        path = tmp_path / CACHE_FILENAME
        async with ScriptedLLMServer([Reply(text="kept")]) as server:
            async with ResponseStore(path) as store, cached(server, store) as llm:
                await llm.complete(PLAIN)
            async with ResponseStore(path) as store, cached(server, store) as llm:
                again = await llm.complete(PLAIN)
                assert llm.cache_statistics().entries == 1
        assert again.cached
        assert again.text == "kept"
        assert len(server.requests) == 1


# ---------------------------------------------------------------------- keys

KEYED_REQUEST_CHANGES: dict[str, Any] = {
    "messages": (SystemMessage(content="be brief"), UserMessage(content="hi")),
    "tools": (TOOL,),
    "tool_choice": "required",
    "temperature": 0.5,
    "max_tokens": 77,
}
KEYED_CONFIG_CHANGES: dict[str, Any] = {
    "kind": "anthropic",
    "model": "another-model",
    "base_url": "http://127.0.0.1:1/v1",
    "max_output_tokens": 99,
}


def test_every_field_is_either_keyed_or_named_as_not_sent(anyio_backend: str) -> None:
    # A field added to either struct must be keyed (the default) or listed as never sent:
    # this test names each, so adding one makes someone decide.
    assert set(CompletionRequest.__struct_fields__) == set(KEYED_REQUEST_CHANGES) | set(
        REQUEST_NOT_SENT
    )
    assert set(ProviderConfig.__struct_fields__) == set(KEYED_CONFIG_CHANGES) | set(CONFIG_NOT_SENT)


@pytest.mark.parametrize("field", sorted(KEYED_REQUEST_CHANGES))
def test_each_request_field_changes_the_key(field: str, anyio_backend: str) -> None:
    config = ProviderConfig(kind="openai", model="m")
    base = cache_key(PLAIN, provider="p", config=config)
    changed = request(**{field: KEYED_REQUEST_CHANGES[field]})
    assert cache_key(changed, provider="p", config=config) != base


@pytest.mark.parametrize("field", sorted(KEYED_CONFIG_CHANGES))
def test_each_sent_config_field_changes_the_key(field: str, anyio_backend: str) -> None:
    config = ProviderConfig(kind="openai", model="m")
    other = msgspec.structs.replace(config, **{field: KEYED_CONFIG_CHANGES[field]})
    assert cache_key(PLAIN, provider="p", config=other) != cache_key(
        PLAIN, provider="p", config=config
    )


def test_provider_namespace_and_tool_schema_change_the_key(anyio_backend: str) -> None:
    config = ProviderConfig(kind="openai", model="m")
    base = cache_key(PLAIN, provider="p", config=config)
    assert cache_key(PLAIN, provider="q", config=config) != base
    assert cache_key(PLAIN, provider="p", config=config, namespace="team-a") != base
    schema = msgspec.structs.replace(TOOL, parameters_schema={"type": "object"})
    assert cache_key(request(tools=(TOOL,)), provider="p", config=config) != cache_key(
        request(tools=(schema,)), provider="p", config=config
    )


def test_a_history_with_a_botched_tool_call_has_a_key(anyio_backend: str) -> None:
    config = ProviderConfig(kind="openai", model="m")
    error = MalformedToolArguments(
        "not JSON", call_id="c1", tool_name="geo.lookup", raw_arguments="{oops"
    )
    botched = ToolCall(id="c1", name="geo.lookup", raw_arguments="{oops", error=error)
    fine = ToolCall(id="c1", name="geo.lookup", arguments={"q": "x"})

    def with_call(call: ToolCall) -> CompletionRequest:
        return request(messages=(*PLAIN.messages, AssistantMessage(tool_calls=(call,))))

    key = cache_key(with_call(botched), provider="p", config=config)
    assert key == cache_key(with_call(botched), provider="p", config=config)
    assert key != cache_key(with_call(fine), provider="p", config=config)


def test_what_is_never_sent_does_not_change_the_key(anyio_backend: str) -> None:
    config = ProviderConfig(kind="openai", model="m")
    base = cache_key(PLAIN, provider="p", config=config)
    hints = request(timeout_s=3.0, local_only=True, latency_budget_s=2.0, max_cost_usd=1.0)
    assert cache_key(hints, provider="p", config=config) == base
    tuned = msgspec.structs.replace(config, timeout_s=9.0, max_retries=7, cache_ttl_s=5.0)
    assert cache_key(PLAIN, provider="p", config=tuned) == base
    # Dict order is not part of a request's meaning.
    a = msgspec.structs.replace(TOOL, parameters_schema={"type": "object", "title": "x"})
    b = msgspec.structs.replace(TOOL, parameters_schema={"title": "x", "type": "object"})
    assert cache_key(request(tools=(a,)), provider="p", config=config) == cache_key(
        request(tools=(b,)), provider="p", config=config
    )


@pytest.mark.parametrize("field", sorted(KEYED_REQUEST_CHANGES))
async def test_a_request_differing_in_one_field_misses(store: ResponseStore, field: str) -> None:
    with anyio.fail_after(20):
        async with (
            ScriptedLLMServer([Reply(text="one"), Reply(text="two")]) as server,
            cached(server, store) as llm,
        ):
            first = await llm.complete(PLAIN)
            other = await llm.complete(request(**{field: KEYED_REQUEST_CHANGES[field]}))
            stats = llm.cache_statistics()
    assert (first.text, other.text) == ("one", "two")
    assert not other.cached
    assert len(server.requests) == 2
    assert (stats.hits, stats.misses) == (0, 2)


# ---------------------------------------------------------------------- what is not cached


@pytest.mark.parametrize("status", [400, 500])
async def test_an_error_is_not_cached(store: ResponseStore, status: int) -> None:
    with anyio.fail_after(20):
        async with (
            ScriptedLLMServer([HTTPError(status=status), Reply(text="fine now")]) as server,
            cached(server, store) as llm,
        ):
            with pytest.raises(RequestRejected if status == 400 else ProviderUnavailable):
                await llm.complete(PLAIN)
            answer = await llm.complete(PLAIN)
            stats = llm.cache_statistics()
    assert answer.text == "fine now"
    assert not answer.cached
    assert len(server.requests) == 2
    assert (stats.hits, stats.misses, stats.stores, stats.entries) == (0, 2, 1, 1)


async def test_an_answer_cut_at_max_tokens_is_not_cached(store: ResponseStore) -> None:
    with anyio.fail_after(20):
        async with (
            ScriptedLLMServer(
                [Reply(text="Par", finish_reason="length"), Reply(text="Paris")]
            ) as server,
            cached(server, store) as llm,
        ):
            assert (await llm.complete(PLAIN)).finish_reason == "length"
            assert (await llm.complete(PLAIN)).text == "Paris"
            stats = llm.cache_statistics()
    assert (stats.not_stored, stats.stores) == (1, 1)


@pytest.mark.openai_stream
async def test_a_stream_left_early_or_cancelled_is_not_cached(store: ResponseStore) -> None:
    with anyio.fail_after(20):
        server = ScriptedLLMServer(
            [Reply(text="a long answer, in pieces", chunk_size=2), Reply(text="x" * 40)]
        )
        async with server, cached(server, store) as llm:
            async with llm.stream(PLAIN) as chunks:
                async for _ in chunks:
                    break  # left before the end
            with anyio.move_on_after(30) as scope:
                async with llm.stream(PLAIN) as chunks:
                    async for _ in chunks:
                        scope.cancel()
            stats = llm.cache_statistics()
        assert (stats.stores, stats.entries, stats.not_stored) == (0, 0, 1)


# ---------------------------------------------------------------------- expiry and bounds


async def test_an_answer_expires_after_its_ttl(store: ResponseStore, clock: Clock) -> None:
    with anyio.fail_after(20):
        async with (
            ScriptedLLMServer([Reply(text="old"), Reply(text="new")]) as server,
            cached(server, store, cache_ttl_s=60.0) as llm,
        ):
            await llm.complete(PLAIN)
            clock.now += 59
            assert (await llm.complete(PLAIN)).text == "old"
            clock.now += 2
            fresh = await llm.complete(PLAIN)
            stats = llm.cache_statistics()
    assert fresh.text == "new"
    assert not fresh.cached
    assert (stats.hits, stats.expirations, stats.entries) == (1, 1, 1)


async def test_the_least_recently_served_answer_is_evicted(
    store: ResponseStore, clock: Clock
) -> None:
    asks = [request(messages=(UserMessage(content=q),)) for q in ("a", "b", "c")]
    with anyio.fail_after(20):
        async with (
            ScriptedLLMServer([Reply(text=t) for t in ("A", "B", "C", "B2")]) as server,
            cached(server, store, cache_max_entries=2) as llm,
        ):
            for ask in asks[:2]:
                await llm.complete(ask)
                clock.now += 1
            assert (await llm.complete(asks[0])).cached  # a is now the most recently served
            clock.now += 1
            await llm.complete(asks[2])  # evicts b
            assert (await llm.complete(asks[0])).text == "A"
            assert not (await llm.complete(asks[1])).cached
            stats = llm.cache_statistics()
    assert stats.entries == 2
    assert stats.evictions == 2


async def test_the_byte_bound_holds(store: ResponseStore) -> None:
    with anyio.fail_after(20):
        async with (
            ScriptedLLMServer([Reply(text="y" * 300) for _ in range(5)]) as server,
            cached(server, store, cache_max_bytes=1000) as llm,
        ):
            for n in range(5):
                await llm.complete(request(messages=(UserMessage(content=f"q{n}"),)))
            stats = llm.cache_statistics()
        assert 0 < stats.bytes <= 1000
        assert stats.entries < 5
        assert stats.evictions >= 2
        # An answer larger than the bound by itself is never stored.
        async with (
            ScriptedLLMServer([Reply(text="z" * 2000)]) as server,
            cached(server, store, cache_max_bytes=1000) as llm,
        ):
            await llm.complete(request(messages=(UserMessage(content="big"),)))
            assert llm.cache_statistics().not_stored == 1


# ---------------------------------------------------------------------- tenants


async def test_tenants_do_not_share_answers(store: ResponseStore) -> None:
    with anyio.fail_after(20):
        async with (
            ScriptedLLMServer([Reply(text="for a"), Reply(text="for b"), Reply(text="none")]) as s,
            cached(s, store) as llm,
        ):
            with llm_namespace("team-a"):
                assert (await llm.complete(PLAIN)).text == "for a"
            with llm_namespace("team-b"):
                assert (await llm.complete(PLAIN)).text == "for b"
            assert (await llm.complete(PLAIN)).text == "none"
            with llm_namespace("team-a"):
                hit = await llm.complete(PLAIN)
            stats = llm.cache_statistics()
    assert hit.cached
    assert hit.text == "for a"
    assert (stats.hits, stats.misses, stats.entries) == (1, 3, 3)


# ---------------------------------------------------------------------- configuration


def test_loom_toml_and_the_environment_switch_the_cache_on(anyio_backend: str) -> None:
    table = {"local": {"kind": "openai", "model": "m", "cache": True, "cache_ttl_s": 60}}
    config = load_llm_config(table, environ={"LOOM_LLM_LOCAL_CACHE_MAX_ENTRIES": "5"})
    local = config.providers["local"]
    assert (local.cache, local.cache_ttl_s, local.cache_max_entries) == (True, 60.0, 5)
    off = load_llm_config(table, environ={"LOOM_LLM_LOCAL_CACHE": "false"})
    assert not off.providers["local"].cache
    with pytest.raises(LLMConfigError, match="cache_ttl_s"):
        load_llm_config({"x": {"kind": "openai", "model": "m", "cache_ttl_s": 0}}, environ={})


async def test_the_router_wraps_the_providers_that_ask_for_it(
    server: ScriptedLLMServer, store: ResponseStore
) -> None:
    url = server.openai_base_url
    table: dict[str, dict[str, Any]] = {
        "cached": {"kind": "openai", "model": "m", "base_url": url, "cache": True},
        "plain": {"kind": "openai", "model": "m", "base_url": url},
    }
    config = load_llm_config(table, environ={})
    with pytest.raises(LLMConfigError, match="needs a response store"):
        ModelRouter.from_config(config)
    async with ModelRouter.from_config(config, cache=store) as router:
        assert isinstance(router.providers["cached"], CachedLLM)
        assert isinstance(router.providers["plain"], OpenAIProvider)
        server.push(Reply(text="routed"))
        assert (await router.complete(PLAIN)).text == "routed"
        assert (await router.complete(PLAIN)).cached
        provider = router.providers["cached"]
        assert isinstance(provider, CachedLLM)
        assert provider.cache_statistics() == CacheStats(
            hits=1,
            misses=1,
            stores=1,
            saved_prompt_tokens=provider.statistics().prompt_tokens,
            saved_completion_tokens=provider.statistics().completion_tokens,
            entries=1,
            bytes=provider.cache_statistics().bytes,
        )
        assert provider.statistics().calls == 1  # the hit never reached the provider
