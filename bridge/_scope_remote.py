"""The server as the authority over a capped turn's call scope, from a connected process:
:class:`RemoteScopes`, a :class:`~loom.runtime.lowlevel.ScopeAuthority` over
``loom.v1.Scopes`` (the server side is ``bridge/_scope_service.py``).

Each call of a capped turn made in this process (the turn's own, or one made for a turn whose
call was pushed here) reserves its count and a parallel slot on the server before it runs and
releases the slot when it ends: one round trip per call, on one stream per client opened at
the first reservation.

Failure, fail closed (``ScopeUnavailable``, a ``ToolCallRefused`` with budget ``call_scope``):

* no connection within ``timeout_s``, or no answer to an Acquire within it: the call is
  refused (a call nobody counted could pass the turn's caps);
* the stream ends while calls run under reservations (the connection broke; the server freed
  their slots when it saw the end): those calls are cancelled and fail with it, since their
  slots may be running someone else's call now;
* the stream ends while an Acquire is unanswered: it is sent once more, with the same id, on a
  new stream (the server does not count it twice).

A server without the service (``UNIMPLEMENTED``, an older Loom) makes :attr:`absent` true:
calls are counted in this process again, as before (the counts travel back with results).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import anyio
import grpc
import grpc.aio

from loom.bridge._generated import scopes_pb2, scopes_pb2_grpc
from loom.runtime import LoomError
from loom.runtime.lowlevel import CallScope, new_id
from loom.runtime.tools import ScopeUnavailable, ToolCallRefused

from ._aio import rpc_text, unary
from ._llm_client import Channel, Metadata

__all__ = ["DEFAULT_SCOPE_TIMEOUT_S", "RemoteScopes"]

log = logging.getLogger("loom.bridge.scopes")

DEFAULT_SCOPE_TIMEOUT_S = 10.0
"""How long a call waits for the connection and for the server's first answer."""

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]
"""Starts a task in the client's task group (its stream's reader)."""

_Kind = scopes_pb2.ScopeReply.Kind

_ENDED = (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, LoomError)
"""What writing to a stream that ended raises."""


class _Waiter:
    __slots__ = ("answered", "granted", "kind", "reply")

    def __init__(self) -> None:
        self.answered = anyio.Event()  # the first answer (or the stream's end)
        self.granted = anyio.Event()  # the final answer (or the stream's end)
        self.kind = 0
        self.reply: scopes_pb2.ScopeReply | None = None


class _Stream:
    """One ``Scopes.Reserve`` stream: the Acquires waiting for an answer, the calls running
    under a reservation (cancelled if it ends), and why it ended."""

    def __init__(
        self, call: grpc.aio.StreamStreamCall[scopes_pb2.ScopeRequest, scopes_pb2.ScopeReply]
    ) -> None:
        self.call = call
        self.lock = anyio.Lock()
        self.waiters: dict[str, _Waiter] = {}
        self.running: dict[str, anyio.CancelScope] = {}
        self.ended = ""

    async def send(self, request: scopes_pb2.ScopeRequest) -> None:
        async with self.lock:
            await unary(self.call.write(request))


class RemoteScopes:
    """The server's call scopes (``loom.v1.Scopes``) for the calls of one client's process.

    Args:
        channel: gives the channel, once there is a connection.
        metadata: gives each call's metadata (the token).
        agent_id: the agent the reservations are made as.
        spawn: starts the stream's reader in the client's task group.
        timeout_s: see the module docs.
    """

    def __init__(
        self,
        channel: Channel,
        metadata: Metadata,
        agent_id: str,
        spawn: Spawn,
        *,
        timeout_s: float = DEFAULT_SCOPE_TIMEOUT_S,
    ) -> None:
        self._channel = channel
        self._metadata = metadata
        self._agent_id = agent_id
        self._spawn = spawn
        self.timeout_s = timeout_s
        self._absent = False
        self._stream: _Stream | None = None
        self._opening = anyio.Lock()
        self._failures = 0  # opens that failed
        self._failed = ""  # why the last one did

    @property
    def absent(self) -> bool:
        """The server answered UNIMPLEMENTED: calls are counted in this process."""
        return self._absent

    async def _open(self, tool: str) -> _Stream:
        failures = self._failures
        async with self._opening:
            stream = self._stream
            if stream is not None and not stream.ended:
                return stream
            if self._failures != failures:
                # The open this call queued behind failed: so does this one, at once (not
                # one more timeout per call waiting).
                raise ScopeUnavailable(self._failed, tool=tool)
            try:
                with anyio.fail_after(self.timeout_s):
                    channel = await self._channel()
            except TimeoutError:
                self._failed = f"no connection to the server within {self.timeout_s:g} s"
                self._failures += 1
                raise ScopeUnavailable(self._failed, tool=tool) from None
            except LoomError as exc:  # the client closed
                self._failed = str(exc)
                self._failures += 1
                raise ScopeUnavailable(self._failed, tool=tool) from None
            call = scopes_pb2_grpc.ScopesStub(channel).Reserve(metadata=self._metadata())
            stream = _Stream(call)
            try:
                self._spawn(lambda: self._read(stream))
            except RuntimeError as exc:  # no task group: the client is not open
                call.cancel()
                raise ScopeUnavailable(f"the client is closed ({exc})", tool=tool) from None
            self._stream = stream
            return stream

    async def _read(self, stream: _Stream) -> None:
        why = "the server ended the stream"
        try:
            while True:
                reply = await unary(stream.call.read())
                if reply is grpc.aio.EOF:
                    break
                assert isinstance(reply, scopes_pb2.ScopeReply)
                waiter = stream.waiters.get(reply.reservation_id)
                if waiter is None:
                    continue
                waiter.kind = reply.kind
                waiter.reply = reply
                waiter.answered.set()
                if reply.kind != _Kind.KIND_QUEUED:
                    waiter.granted.set()
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNIMPLEMENTED:
                log.info("the server keeps no call scopes: calls are counted in this process")
                self._absent = True
            why = f"Scopes.Reserve: {rpc_text(exc)}"
        except LoomError as exc:  # ConnectionLost
            why = f"Scopes.Reserve: {exc}"
        finally:
            # The server frees every slot of this stream when it sees the end: the calls
            # running under them are cut, and unanswered Acquires are told.
            stream.ended = why
            if self._stream is stream:
                self._stream = None
            for waiter in stream.waiters.values():
                waiter.answered.set()
                waiter.granted.set()
            for scope in stream.running.values():
                scope.cancel()
            stream.call.cancel()

    def _acquire_message(
        self, scope: CallScope, rid: str, tool: str, wait: bool
    ) -> scopes_pb2.ScopeRequest:
        acquire = scopes_pb2.ScopeAcquire(
            reservation_id=rid,
            scope_id=scope.id,
            agent_id=self._agent_id,
            wait=wait,
            tool=tool,
        )
        if scope.max_tool_calls is not None:
            acquire.max_tool_calls = max(scope.max_tool_calls, 0)
        if scope.max_parallel is not None:
            acquire.max_parallel_tool_calls = scope.max_parallel
        if scope.max_depth is not None:
            acquire.max_call_depth = scope.max_depth
        return scopes_pb2.ScopeRequest(acquire=acquire)

    async def _granted(self, scope: CallScope, rid: str, tool: str, wait: bool) -> _Stream | None:
        """Send the Acquire (again once on a new stream if the first ended unanswered); the
        stream it was granted on, or ``None`` when the server turned out to be absent.

        Raises:
            ToolCallRefused, ScopeUnavailable: see :meth:`reserve`.
        """
        message = self._acquire_message(scope, rid, tool, wait)
        for attempt in (1, 2):
            stream = await self._open(tool)
            waiter = _Waiter()
            stream.waiters[rid] = waiter
            try:
                with contextlib.suppress(*_ENDED):  # ended: the reader says why
                    await stream.send(message)
                with anyio.move_on_after(self.timeout_s):
                    await waiter.answered.wait()
                if not waiter.answered.is_set():
                    await self._release(stream, rid)  # it may still count: never hold a slot
                    why = f"the server did not answer within {self.timeout_s:g} s"
                    raise ScopeUnavailable(why, tool=tool)
                await waiter.granted.wait()  # queued: a turn's own call waits for a slot
            except BaseException:
                # Gave up (cancelled) with the Acquire possibly taken: the Release follows it
                # on the stream, so whatever it got is given back (a no-op if nothing).
                await self._release(stream, rid)
                raise
            finally:
                del stream.waiters[rid]
            reply = waiter.reply
            if reply is not None and reply.kind == _Kind.KIND_GRANTED and not stream.ended:
                return stream
            if reply is not None and reply.kind == _Kind.KIND_REFUSED:
                raise ToolCallRefused(reply.budget, reply.limit, tool=tool)
            if self._absent:
                return None
            if attempt == 2 or (reply is not None and reply.kind == _Kind.KIND_GRANTED):
                raise ScopeUnavailable(stream.ended, tool=tool)
        raise AssertionError("unreachable")

    async def _release(self, stream: _Stream, rid: str) -> None:
        if stream.ended:
            return  # the server freed it with the stream
        release = scopes_pb2.ScopeRequest(release=scopes_pb2.ScopeRelease(reservation_id=rid))
        # Shielded: a cancelled call still gives its slot back. A stream that ended meanwhile
        # needs nothing: the server freed the slot with it.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(self.timeout_s),
            contextlib.suppress(*_ENDED),
        ):
            await stream.send(release)

    @asynccontextmanager
    async def reserve(self, scope: CallScope, *, tool: str, wait: bool) -> AsyncIterator[str]:
        """Count one call of ``scope`` on the server and hold a parallel slot there while the
        block runs (a :class:`~loom.runtime.lowlevel.ScopeAuthority`); gives the
        reservation's id, ``""`` when the server keeps no scopes (nothing held).

        Raises:
            ToolCallRefused: a cap of the turn is reached.
            ScopeUnavailable: see the module docs.
        """
        if self._absent:
            yield ""
            return
        rid = new_id()
        stream = await self._granted(scope, rid, tool, wait)
        if stream is None:
            yield ""
            return
        cut = anyio.CancelScope()
        stream.running[rid] = cut
        try:
            with cut:
                yield rid
        finally:
            del stream.running[rid]
            await self._release(stream, rid)
        if cut.cancelled_caught:
            why = f"{stream.ended}; the call was cut, its slot freed there"
            raise ScopeUnavailable(why, tool=tool)
