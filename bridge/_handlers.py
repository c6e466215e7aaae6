"""Services added to a ``grpc.aio`` server: as generic handlers only, each method guarded
against request bytes that do not decode.

The generated ``add_*Servicer_to_server`` functions (and health's and reflection's) register
every method twice: as a generic handler and as a *registered method*. grpc.aio's server keeps
one pending request per registered method and, on every incoming call, waits on all of them
with ``asyncio.wait`` and then re-arms the one that fired: a cost paid per RPC that grows with
the number of methods (fifteen here, about a fifth of a small unary call's server CPU).
Generic handlers alone are looked up per call in a dict per service, for a few microseconds.

grpc.aio decodes a unary request itself, before any code of ours runs, and answers bytes that
do not decode with ``UNKNOWN`` and an ERROR log with a full traceback, once per call: a flood
of garbage (no credentials needed on a server without a token) became a flood of tracebacks.
Every service of the server is added through :class:`GenericOnly`, so each method's request
decoder is wrapped there, once for all of them, whatever the service (Loom's, health,
reflection, and any added later):

- a unary request that does not decode reaches the method as a marker, and the method's
  wrapper ends the call with ``INVALID_ARGUMENT`` and a one-line reason, before the servicer
  sees anything;
- a frame of a request stream that does not decode raises :class:`MalformedRequest` (a
  protobuf ``DecodeError``) from ``context.read()``: ``EventStream`` handles it itself (it
  ends the stream with ``INVALID_ARGUMENT``), and the wrapper answers the same for a servicer
  that lets it through (server reflection).

Each undecodable request or frame is counted (``ServerStatistics.malformed_requests``) and
logged as a one-line warning, at most :data:`WARN_BURST` per :data:`WARN_INTERVAL_S` (the first
one logged after a window that suppressed some says how many).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from ._errors import WireError
from ._status import status_of

__all__ = ["GenericOnly", "MalformedRequest", "RequestGuard", "WarningThrottle"]

log = logging.getLogger("loom.bridge")

WARN_BURST: Final = 10
WARN_INTERVAL_S: Final = 60.0

if TYPE_CHECKING:
    _Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
_Behaviour: TypeAlias = Callable[..., Any]


class MalformedRequest(WireError, DecodeError):
    """Request bytes that do not decode as the method's request message.

    A ``DecodeError`` too, so a servicer that reads a request stream and catches protobuf's
    error (``EventStream``) goes on handling it as before. Its ``field`` is the message's
    full name.
    """


def _reason(exc: Exception, message: str) -> str:
    """Protobuf's ``Error parsing message with type 'x.Y': <reason>`` without its prefix
    (the message name is said once, by :class:`MalformedRequest`)."""
    text = str(exc) or type(exc).__name__
    prefix = f"Error parsing message with type '{message}': "
    return text.removeprefix(prefix)


class WarningThrottle:
    """Logs at most ``burst`` warnings per ``interval_s`` and counts the others; the first
    warning logged after a window with suppressed ones says how many there were.

    Thread-safe: grpc.aio runs a synchronous servicer (server reflection) in a thread pool.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = WARN_BURST,
        interval_s: float = WARN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._window_end = -float("inf")
        self._logged = 0
        self._suppressed = 0

    def warning(self, message: str) -> None:
        with self._lock:
            now = self._clock()
            if now >= self._window_end:
                suppressed, self._suppressed = self._suppressed, 0
                self._logged = 0
                self._window_end = now + self._interval_s
                if suppressed:
                    message += f" ({suppressed} more like it not logged in the previous window)"
            if self._logged >= self._burst:
                self._suppressed += 1
                suppressed = True
            else:
                self._logged += 1
                suppressed = False
        if not suppressed:
            self._logger.warning("%s", message)
        elif self._logger.isEnabledFor(logging.DEBUG):
            # Not a warning (a flood must not flood the log), but debug shows each one.
            self._logger.debug(
                "%s (rate-limited: over %d such warnings in %g s)",
                message,
                self._burst,
                self._interval_s,
            )


class RequestGuard:
    """What the wrapped methods of one server share: the count of refused requests and the
    throttle of their warnings."""

    def __init__(self, throttle: WarningThrottle | None = None) -> None:
        self.refused = 0
        # The request-and-response streams (EventStream), counted where their frames are
        # decoded and encoded: the bytes are the ones on the wire, at one addition per frame.
        # (Decoding and encoding run on the event loop's thread, as the servicers do.)
        self.streams = 0
        self.frames_received = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.bytes_sent = 0
        self._throttle = throttle if throttle is not None else WarningThrottle(log)
        self._lock = threading.Lock()

    def refuse(self, what: str, exc: MalformedRequest) -> None:
        """Count and (throttled) log one undecodable request or request frame."""
        with self._lock:
            self.refused += 1
        self._throttle.warning(f"{what}: {exc}; answered {status_of(exc).name}")


def _peer(context: Any) -> str:
    try:
        return str(context.peer())
    except Exception:  # the call is already gone; the warning is still worth having
        return "a peer already gone"


class GenericOnly:
    """Stands in for the server when adding a servicer: keeps the generic handlers, each
    guarded (see the module docs), and drops the registered-method ones (the generic handlers
    already serve every method)."""

    def __init__(self, server: grpc.aio.Server, guard: RequestGuard) -> None:
        self._server = server
        self._guard = guard

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_Guarded(h, self._guard) for h in handlers])

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        pass


class _Guarded(grpc.GenericRpcHandler):
    """A generic handler whose methods decode their requests through :func:`_guard`."""

    def __init__(self, inner: grpc.GenericRpcHandler, guard: RequestGuard) -> None:
        self._inner = inner
        self._guard = guard
        # Wrapped once per method, on its first call. Only methods the inner handler serves
        # are kept, so unknown names sent by a client do not grow it.
        self._methods: dict[str, _Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> _Handler | None:
        method = handler_call_details.method
        found = self._methods.get(method)
        if found is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None
            found = self._methods[method] = _guard(handler, method, self._guard)
        return found


class _Undecodable:
    """What a unary request that did not decode reaches its method as."""

    __slots__ = ("error",)

    def __init__(self, error: MalformedRequest) -> None:
        self.error = error


def _guard(handler: _Handler, method: str, guard: RequestGuard) -> _Handler:
    decode = handler.request_deserializer
    streaming = handler.request_streaming
    if streaming:
        behaviour = handler.stream_stream or handler.stream_unary
    else:
        behaviour = handler.unary_stream or handler.unary_unary
    if decode is None or behaviour is None:  # raw bytes in: nothing can fail to decode
        return handler
    owner = getattr(decode, "__self__", None)  # generated code passes Message.FromString
    descriptor = getattr(owner, "DESCRIPTOR", None)
    message = str(getattr(descriptor, "full_name", "the method's request message"))

    def malformed(exc: Exception) -> MalformedRequest:
        return MalformedRequest(message, _reason(exc, message))

    def decode_frame(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception as exc:
            error = malformed(exc)
            # Counted here, as it happens (the servicer may handle it: EventStream does);
            # grpc gives a deserializer no call, so no peer to name.
            guard.refuse(f"a request frame of {method}", error)
            raise error from None

    def decode_request(raw: bytes) -> Any:
        try:
            return decode(raw)
        except Exception as exc:
            # Raised here, it would reach grpc.aio's catch-all (UNKNOWN, a traceback).
            return _Undecodable(malformed(exc))

    out = handler.response_serializer
    match streaming, handler.response_streaming:
        case True, True:
            wrapped = _catching(behaviour, guard)
            return grpc.stream_stream_rpc_method_handler(
                wrapped, _counting_in(decode_frame, guard), _counting_out(out, guard)
            )
        case True, False:
            wrapped = _catching(behaviour)
            return grpc.stream_unary_rpc_method_handler(wrapped, decode_frame, out)
        case False, True:
            wrapped = _checking(behaviour, method, guard)
            return grpc.unary_stream_rpc_method_handler(wrapped, decode_request, out)
        case _:
            wrapped = _checking(behaviour, method, guard)
            return grpc.unary_unary_rpc_method_handler(wrapped, decode_request, out)


# grpc.aio calls a method differently by its kind (a coroutine, an async generator, or a plain
# function or generator run in a thread), so each wrapper keeps the kind of what it wraps.


def _checking(behaviour: _Behaviour, method: str, guard: RequestGuard) -> _Behaviour:
    """``behaviour`` (unary request), refusing an :class:`_Undecodable` request."""
    if inspect.isasyncgenfunction(behaviour):

        async def agen(request: Any, context: Any) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                guard.refuse(f"{method} from {_peer(context)}", request.error)
                await context.abort(status_of(request.error), str(request.error))
            async for item in behaviour(request, context):
                yield item

        return agen
    if inspect.iscoroutinefunction(behaviour):

        async def coro(request: Any, context: Any) -> Any:
            if isinstance(request, _Undecodable):
                guard.refuse(f"{method} from {_peer(context)}", request.error)
                await context.abort(status_of(request.error), str(request.error))
            return await behaviour(request, context)

        return coro
    if inspect.isgeneratorfunction(behaviour):

        def gen(request: Any, context: Any) -> Iterator[Any]:
            if isinstance(request, _Undecodable):
                guard.refuse(f"{method} from {_peer(context)}", request.error)
                context.abort(status_of(request.error), str(request.error))
            yield from behaviour(request, context)

        return gen

    def func(request: Any, context: Any) -> Any:
        if isinstance(request, _Undecodable):
            guard.refuse(f"{method} from {_peer(context)}", request.error)
            context.abort(status_of(request.error), str(request.error))
        return behaviour(request, context)

    return func


def _counting_in(decode: Callable[[bytes], Any], guard: RequestGuard) -> Callable[[bytes], Any]:
    def counted(raw: bytes) -> Any:
        guard.frames_received += 1
        guard.bytes_received += len(raw)
        return decode(raw)

    return counted


def _counting_out(
    encode: Callable[[Any], bytes] | None, guard: RequestGuard
) -> Callable[[Any], bytes] | None:
    if encode is None:
        return None

    def counted(message: Any) -> bytes:
        raw = encode(message)
        guard.frames_sent += 1
        guard.bytes_sent += len(raw)
        return raw

    return counted


def _catching(behaviour: _Behaviour, streams: RequestGuard | None = None) -> _Behaviour:
    """``behaviour`` (request stream), answering a :class:`MalformedRequest` it lets out
    (already counted and logged where it was raised); with ``streams``, counting each call in
    its ``streams``."""
    if inspect.isasyncgenfunction(behaviour):

        async def agen(requests: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in behaviour(requests, context):
                    yield item
            except MalformedRequest as exc:
                await context.abort(status_of(exc), str(exc))

        return agen
    if inspect.iscoroutinefunction(behaviour):

        async def coro(requests: Any, context: Any) -> Any:
            if streams is not None:
                streams.streams += 1
            try:
                return await behaviour(requests, context)
            except MalformedRequest as exc:
                await context.abort(status_of(exc), str(exc))

        return coro
    if inspect.isgeneratorfunction(behaviour):

        def gen(requests: Any, context: Any) -> Iterator[Any]:
            try:
                yield from behaviour(requests, context)
            except MalformedRequest as exc:
                context.abort(status_of(exc), str(exc))

        return gen

    def func(requests: Any, context: Any) -> Any:
        try:
            return behaviour(requests, context)
        except MalformedRequest as exc:
            context.abort(status_of(exc), str(exc))

    return func
