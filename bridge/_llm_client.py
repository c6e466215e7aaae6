"""``ServerLLM``: the server's model router as an :class:`~loom.runtime.llm.LLM`, through
``loom.v1.LLM`` (``proto/loom/v1/llm.proto``), so an agent process needs no API key.

It is what ``CognitiveAgent(llm="server")`` uses when the agent runs connected to a server
(``BridgeClient.llm()``). What a call promises:

* **Streaming.** :meth:`ServerLLM.stream` yields the server's chunks as they arrive (text
  pieces, whole tool calls, the final ``StreamEnd``). It reads the first chunk before it
  returns, so an error before the model answered (refused, rate limited, an unknown model)
  is raised by ``async with``, as of a provider; later ones by the iteration.
* **Deadline.** The RPC's deadline is the request's ``timeout_s`` (else ``timeout_s`` of the
  ``ServerLLM``), cut to the enclosing cancel scope's deadline if that is sooner (plus a
  little, so the scope cancels as itself). The server bounds the model call by it; when it
  passes, the call raises :class:`~loom.runtime.llm.ProviderTimeout`.
* **Cancellation.** Cancelling the caller (or leaving the ``async with`` early) cancels the
  RPC, and the server abandons the provider's request.
* **Errors** are the runtime's own: the class the server's ``LLMFailure`` frame names, with
  its message and fields (``RateLimited.retry_after``, ``RequestRejected.status``...),
  ``UnknownModel``, ``NoModelConfigured`` for a server without ``[llm]`` (or one too old to
  have the service); a server unreachable or gone mid-call is ``ProviderUnavailable`` (a
  ``BridgeClient`` waits for its connection first: ``ProviderTimeout`` if none comes within
  the deadline); refused credentials ``Unauthenticated``.
* **Prices.** Its answers carry their price (``Completion.cost_usd``: the server's, at the
  provider that served the call), and :meth:`ServerLLM.prices` says the server's prices (its
  ``ListModels``, asked once and kept), so a turn's cost budgets estimate and count its calls
  as a hosted agent's. A server older than that says none: tokens only are counted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import grpc
import grpc.aio

from loom.bridge._generated import llm_pb2, llm_pb2_grpc
from loom.runtime import InvalidArgument, LoomError
from loom.runtime.llm import (
    Completion,
    CompletionRequest,
    LLMError,
    ModelPrices,
    NoModelConfigured,
    ProviderTimeout,
    ProviderUnavailable,
    StreamChunk,
    StreamEnd,
)

from ._aio import rpc_text, unary
from ._errors import ConnectionLost, WireError
from ._llm_convert import chunk_from_proto, request_to_proto
from ._status import error_from_status

__all__ = ["ServerLLM"]

# The RPC's deadline is this much after an enclosing scope's: the scope cancels as itself.
_SLACK_S = 0.25

Channel = Callable[[], Awaitable[grpc.aio.Channel]]
"""Gives the channel to call on, once there is a connection."""
Metadata = Callable[[], tuple[tuple[str, str], ...]]
"""Gives the metadata of one call (the bearer token, the trace context)."""


class ServerLLM:
    """The server's model, as an :class:`~loom.runtime.llm.LLM` (see the module docs).

    Made by ``BridgeClient.llm()``; or directly over any channel to a Loom server.

    Args:
        channel: gives the channel (awaited before each call: a client waits for its
            connection there).
        metadata: gives each call's metadata.
        model: a provider of the server's ``[llm]`` by name, or ``""`` for its router.
        timeout_s: the deadline of a call whose request sets no ``timeout_s``.
        name: this LLM's name (in turn spans and logs).
    """

    def __init__(
        self,
        channel: Channel,
        metadata: Metadata = tuple,
        *,
        model: str = "",
        timeout_s: float = 300.0,
        name: str = "server",
    ) -> None:
        if not timeout_s > 0:
            raise InvalidArgument(f"timeout_s must be > 0 seconds, not {timeout_s!r}")
        self._channel = channel
        self._metadata = metadata
        self.model = model
        self.timeout_s = timeout_s
        self._name = name if not model else f"{name}:{model}"
        self._prices: ModelPrices | None = None
        self._prices_asked = False
        self._prices_lock = anyio.Lock()  # turns side by side ask the server once

    @property
    def name(self) -> str:
        return self._name

    async def prices(self) -> ModelPrices | None:
        """The server's prices for the calls of this model (a ``PricedElsewhere``): its
        provider's (``model``), or the dearest of its router's and the largest output cap, as
        a router in process estimates. Asked once (``ListModels``) and kept: a server
        restarted with other prices changes the estimates of this process's calls only when
        it restarts too (what each call cost always comes with its answer).

        Returns:
            ``None`` from a server that does not price its answers (older than that), or
            that has no such model (the call itself then fails, saying so).

        Raises:
            ProviderTimeout: no answer within ``timeout_s`` (the connection wait included).
            LoomError: the server refused the call (``Unauthenticated``...).
        """
        async with self._prices_lock:
            if not self._prices_asked:
                self._prices = await self._ask_prices()
                self._prices_asked = True
            return self._prices

    async def _ask_prices(self) -> ModelPrices | None:
        budget = self.timeout_s
        try:
            with anyio.fail_after(budget):
                stub = llm_pb2_grpc.LLMStub(await self._channel())
                call = stub.ListModels(
                    llm_pb2.ListModelsRequest(), timeout=budget, metadata=self._metadata()
                )
                reply = await unary(call)
        except TimeoutError:
            raise ProviderTimeout(
                f"the server did not say its prices within {budget:g} s", provider=self._name
            ) from None
        except ConnectionLost:
            raise ProviderUnavailable(
                "the connection to the server was lost", provider=self._name
            ) from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                return None  # no LLM service at all: the call fails by itself
            raise self._from_status(exc, budget) from None
        if not reply.priced:
            return None
        models = [m for m in reply.models if not self.model or m.name == self.model]
        if not models:
            return None
        caps = [m.max_output_tokens for m in models if m.HasField("max_output_tokens")]
        return ModelPrices(
            cost_per_1k_input=max(m.cost_per_1k_input for m in models),
            cost_per_1k_output=max(m.cost_per_1k_output for m in models),
            max_output_tokens=max(caps) if caps else None,
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        """The whole answer (one ``Complete`` call with ``stream = false``)."""
        async with self._call(request, stream=False) as chunks:
            # Read to the end (the stream stops after its StreamEnd), leaving no generator
            # suspended behind.
            ends = [chunk.completion async for chunk in chunks if isinstance(chunk, StreamEnd)]
        return ends[-1]

    @asynccontextmanager
    async def stream(self, request: CompletionRequest) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        """The answer as it is generated (see :meth:`LLM.stream`)."""
        async with self._call(request, stream=True) as chunks:
            yield chunks

    @asynccontextmanager
    async def _call(
        self, request: CompletionRequest, *, stream: bool
    ) -> AsyncIterator[AsyncIterator[StreamChunk]]:
        budget = request.timeout_s if request.timeout_s is not None else self.timeout_s
        start = anyio.current_time()
        deadline = min(start + budget, anyio.current_effective_deadline() + _SLACK_S)
        msg = request_to_proto(request, model=self.model, stream=stream)
        try:
            with anyio.fail_after(max(deadline - start, 0.001) + _SLACK_S):
                channel = await self._channel()  # the wait for a connection counts too
        except TimeoutError:
            raise ProviderTimeout(
                f"no connection to the server within {budget:g} s", provider=self._name
            ) from None
        left = max(deadline - anyio.current_time(), 0.001)
        stub = llm_pb2_grpc.LLMStub(channel)
        call = stub.Complete(msg, timeout=left, metadata=self._metadata())
        try:
            first = await self._read(call, budget)
            yield self._chunks(call, first, budget)
        finally:
            # Early exit, cancellation, an error: the server abandons the model call.
            call.cancel()

    async def _chunks(
        self, call: Any, first: StreamChunk | None, budget: float
    ) -> AsyncIterator[StreamChunk]:
        chunk = first
        while chunk is not None:
            yield chunk
            if isinstance(chunk, StreamEnd):
                return
            chunk = await self._read(call, budget)
        raise self._cut_short()

    async def _read(self, call: Any, budget: float) -> StreamChunk | None:
        """The next chunk (``None`` when the stream ended without an ``end``).

        Raises:
            LLMError: what the server's ``error`` frame or the call's status says.
        """
        try:
            msg = await unary(call.read())
        except grpc.aio.AioRpcError as exc:
            raise self._from_status(exc, budget) from None
        except ConnectionLost:
            raise ProviderUnavailable(
                "the connection to the server was lost", provider=self._name
            ) from None
        if msg is grpc.aio.EOF:
            return None
        try:
            chunk = chunk_from_proto(msg)
        except WireError as exc:
            raise ProviderUnavailable(
                f"the server sent a malformed answer: {exc}", provider=self._name
            ) from None
        if isinstance(chunk, LLMError):
            raise chunk
        return chunk

    def _from_status(self, exc: grpc.aio.AioRpcError, budget: float) -> LoomError:
        code = exc.code()
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return ProviderTimeout(f"no answer within {budget:g} s", provider=self._name)
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            # Unreachable, or gone mid-call (a server stopping past its grace cancels it).
            return ProviderUnavailable(f"the server: {rpc_text(exc)}", provider=self._name)
        if code is grpc.StatusCode.UNIMPLEMENTED:
            return NoModelConfigured(
                "the server does not offer loom.v1.LLM (a Loom server older than the service)"
            )
        return error_from_status(code, exc.details() or code.name)

    def _cut_short(self) -> ProviderUnavailable:
        return ProviderUnavailable(
            "the server ended the answer before its end", provider=self._name
        )
