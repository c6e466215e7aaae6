"""``loom.v1.LLM``: the server's model router (``AgentRuntime.llm``) for agents elsewhere.

An agent in another process calls models through the server, so API keys live only there
(``proto/loom/v1/llm.proto`` has the contract). What a call leaves behind:

* **Deadline.** The call's gRPC deadline shortens the request's ``timeout_s``, so the
  provider gives up in time and says so (``ProviderTimeout``, also through a router, whose
  own word would be ``NoProviderAvailable``); should grpc end the call first, the handler is
  cancelled, and with it the provider's HTTP request.
* **Cancellation.** A client that cancels or goes away cancels the handler: the provider's
  request is closed (its connection dropped), nothing keeps running here, nothing is sent.
* **Errors.** An :class:`LLMError` ends the stream with an ``LLMFailure`` frame (its class and
  fields) and then the status of its kind (``_llm_convert.failure_code``); a malformed request
  ends ``INVALID_ARGUMENT`` before any model is called.
* **Shutdown.** Calls in flight get the server's grace, like every call, then are cancelled.
* **Tenants.** A caller that showed a tenant token makes its calls as its namespace
  (``llm_namespace``): the response cache never answers it with another namespace's answers.
* **Prices.** Each answer carries its price (``Completion.cost_usd``): its usage at the prices
  of the provider that served it, after any fallback (``completion_cost``), and
  ``ListModels`` says each provider's prices and output cap (``priced``): a caller's cost
  budgets count what this server's providers charge (``docs/guardrails.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import grpc
import grpc.aio
import msgspec
from opentelemetry import context as otel_context

from loom.bridge._generated import llm_pb2, llm_pb2_grpc
from loom.runtime import AgentRuntime, InvalidArgument
from loom.runtime.llm import (
    LLM,
    CompletionRequest,
    LLMError,
    ModelRouter,
    NoModelConfigured,
    NoProviderAvailable,
    ProviderConfig,
    ProviderTimeout,
    RoutableLLM,
    StreamEnd,
    UnknownModel,
    completion_cost,
    llm_namespace,
)

from ._identity import Principal
from ._llm_convert import (
    chunk_to_proto,
    completion_to_proto,
    failure_code,
    failure_to_proto,
    request_from_proto,
)
from ._trace import metadata_context

__all__ = ["LLMService"]

log = logging.getLogger("loom.bridge")

_Context = grpc.aio.ServicerContext[Any, Any]

NOT_CONFIGURED = (
    "this server has no model: give its loom.toml an [llm.<name>] table (see docs/serve.md)"
)


def resolve_model(runtime: AgentRuntime, model: str) -> LLM:
    """The model ``model`` names on ``runtime``: its router for ``""``, else a provider.

    Raises:
        NoModelConfigured: the runtime has no model.
        UnknownModel: no provider has that name.
    """
    llm = runtime.llm
    if llm is None:
        raise NoModelConfigured(NOT_CONFIGURED)
    if isinstance(llm, ModelRouter):
        return llm.route(model)
    if model and model != llm.name:
        raise UnknownModel(model, (llm.name,))
    return llm


def _model_info(name: str, llm: LLM) -> llm_pb2.ModelInfo:
    info = llm_pb2.ModelInfo(name=name)
    config = getattr(llm, "config", None)
    if isinstance(config, ProviderConfig):
        info.kind = config.kind
        info.model = config.model
        info.max_output_tokens = config.max_output_tokens
    if isinstance(llm, RoutableLLM):
        p = llm.profile
        info.locality = p.locality
        info.supports_tools = p.supports_tools
        info.supports_streaming = p.supports_streaming
        info.typical_latency_s = p.typical_latency_s
        info.cost_per_1k_input = p.cost_per_1k_input
        info.cost_per_1k_output = p.cost_per_1k_output
    return info


class LLMService(llm_pb2_grpc.LLMServicer):
    """``loom.v1.LLM`` over the runtime's model (see the module docs).

    Args:
        runtime: the runtime whose model serves the calls.
        caller: who made a call (the hub's ``caller``), for its tenant's namespace; without
            it every call is of no namespace.
    """

    def __init__(
        self, runtime: AgentRuntime, caller: Callable[[_Context], Principal] | None = None
    ) -> None:
        self.runtime = runtime
        self._caller = caller

    async def Complete(  # type: ignore[override]
        self, request: llm_pb2.CompleteRequest, context: _Context
    ) -> None:
        try:
            llm = resolve_model(self.runtime, request.model)
            wanted = request_from_proto(request)
        except LLMError as exc:
            await self._fail(context, exc)
            return
        except InvalidArgument as exc:  # a WireError too
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details(str(exc))
            return
        # Traced, the caller's context (in the RPC's metadata) is current while the model
        # runs: the provider's ``chat {model}`` span joins the caller's trace.
        parent = None
        if self.runtime.bus.tracer_provider is not None:
            parent = metadata_context(context.invocation_metadata())
        token = None if parent is None else otel_context.attach(parent)
        namespace = self._caller(context).namespace if self._caller is not None else None
        try:
            with llm_namespace(namespace):
                await self._complete(llm, wanted, request.stream, context)
        finally:
            if token is not None:
                otel_context.detach(token)

    async def _complete(
        self, llm: LLM, wanted: CompletionRequest, stream: bool, context: _Context
    ) -> None:
        left = context.time_remaining()
        if left is not None and (wanted.timeout_s is None or left < wanted.timeout_s):
            # The provider gives up by itself, with a ProviderTimeout naming it, rather than
            # being cut short by grpc without a word.
            wanted = msgspec.structs.replace(wanted, timeout_s=max(left, 0.001))
        deadline = None if wanted.timeout_s is None else anyio.current_time() + wanted.timeout_s
        try:
            if stream:
                async with llm.stream(wanted) as chunks:
                    async for chunk in chunks:
                        msg = chunk_to_proto(chunk)
                        if isinstance(chunk, StreamEnd):
                            msg.end.cost_usd = completion_cost(llm, chunk.completion)
                        await context.write(msg)
            else:
                completion = await llm.complete(wanted)
                end = completion_to_proto(completion)
                end.cost_usd = completion_cost(llm, completion)
                await context.write(llm_pb2.CompleteResponse(end=end))
        except LLMError as exc:
            await self._fail(context, _deadline_first(exc, deadline))

    async def ListModels(
        self, request: llm_pb2.ListModelsRequest, context: _Context
    ) -> llm_pb2.ListModelsResponse:
        llm = self.runtime.llm
        response = llm_pb2.ListModelsResponse(priced=True)  # every Completion has cost_usd
        if isinstance(llm, ModelRouter):
            for name in llm.order:
                response.models.append(_model_info(name, llm.providers[name]))
        elif llm is not None:
            response.models.append(_model_info(llm.name, llm))
        return response

    @staticmethod
    async def _fail(context: _Context, exc: LLMError) -> None:
        failure = failure_to_proto(exc)
        log.info("LLM.Complete failed: %s", exc)
        try:
            await context.write(llm_pb2.CompleteResponse(error=failure))
        except Exception:  # the call is over already (the client went away): status only
            log.debug("LLM.Complete: the error frame could not be written", exc_info=True)
        context.set_code(failure_code(failure))
        context.set_details(str(exc))


def _deadline_first(exc: LLMError, deadline: float | None) -> LLMError:
    """What ended the call: the caller's deadline, once it has passed.

    A router whose provider ran out of the request's time says ``NoProviderAvailable`` (its
    providers all failed); but the time was the caller's, and no other provider could have
    answered within it. So the caller learns ``ProviderTimeout``, as it does when its own
    gRPC deadline ends the call first (a race between two clocks set to the same instant,
    which load decides either way).
    """
    cause = exc.__cause__
    if (
        isinstance(exc, NoProviderAvailable)
        and isinstance(cause, ProviderTimeout)
        and deadline is not None
        and anyio.current_time() >= deadline
    ):
        return cause
    return exc
