"""Exact caps across the nodes of a cluster: the node that keeps a turn's call scope is the
authority for the calls other nodes make for it.

A call from node A for a capped turn whose scope A keeps (a turn hosted on A, or A's server's
shared copy of the scope of a turn in an agent process connected to A) names A as the scope's
authority (``loom-scope-node``). Node B, serving it, counts nothing in its own copy of the
scope: every call made there for the turn (its hosted agents', its bridge agents', calls on to
further nodes) reserves its count and a parallel slot from A before it runs and gives the slot
back when it ends, over core NATS on ``_loom.scope.<A>`` (:class:`NodeScopes`, a
:class:`~loom.runtime.lowlevel.ScopeAuthority`). A serves them in order
(:class:`NodeScopeService`): a release published after an acquire is taken after it.

Reservations of other nodes wait for nothing: only a turn's own calls wait for a slot, and they
are made on the authority's node. A node declared dead gives back every slot it held
(:meth:`NodeScopeService.release_node`, from ``ClusterCalls.fail_node``); a reservation
unanswered within ``timeout_s`` refuses its call with ``ScopeUnavailable`` (fail closed), and a
node that predates this (no responder on the subject) leaves the scope counted as before, in
B's copy with the count sent back in ``CallReply.scope_calls``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from loom.runtime.lowlevel import (
    CallScope,
    acquire_reservation,
    authority_scope,
    new_id,
    release_reservation,
)
from loom.runtime.tools import ScopeUnavailable, ToolCallRefused

__all__ = ["DEFAULT_NODE_SCOPE_TIMEOUT_S", "MAX_NODE_HOLDS", "NodeScopeService", "NodeScopes"]

log = logging.getLogger("loom.cluster")

DEFAULT_NODE_SCOPE_TIMEOUT_S = 10.0
"""How long a reservation waits for the authority node's answer."""

MAX_NODE_HOLDS = 65_536
"""Reservations of other nodes a node holds at once (past that, refused as unavailable)."""


class ScopeAcquire(msgspec.Struct, frozen=True, array_like=True, tag="acquire"):
    reservation_id: str
    caller: str
    scope_id: str
    max_tool_calls: int | None
    max_parallel: int | None
    max_depth: int | None
    tool: str


class ScopeRelease(msgspec.Struct, frozen=True, array_like=True, tag="release"):
    reservation_id: str
    caller: str


class ScopeAnswer(msgspec.Struct, frozen=True, array_like=True):
    granted: bool
    budget: str = ""
    limit: int = 0


_encode = msgspec.msgpack.Encoder().encode
_decode_request = msgspec.msgpack.Decoder(ScopeAcquire | ScopeRelease).decode
_decode_answer = msgspec.msgpack.Decoder(ScopeAnswer).decode


def scope_subject(node: str) -> str:
    return f"_loom.scope.{node}"


class NodeScopeService:
    """This node as the authority for reservations of other nodes (see the module docs)."""

    def __init__(self, node: str, *, max_holds: int = MAX_NODE_HOLDS) -> None:
        self.node = node
        self.max_holds = max_holds
        self._holds: dict[tuple[str, str], tuple[CallScope, object]] = {}

    async def on_message(self, msg: Msg) -> None:
        try:
            request = _decode_request(msg.data)
        except msgspec.DecodeError:
            log.warning("cluster: undecodable scope request on %s", msg.subject)
            return
        if isinstance(request, ScopeRelease):
            entry = self._holds.pop((request.caller, request.reservation_id), None)
            if entry is not None:
                release_reservation(entry[0], request.reservation_id, entry[1])
            return
        answer = await self._acquire(request)
        if msg.reply:
            with contextlib.suppress(Exception):  # the caller's deadline ends it
                await msg.respond(_encode(answer))

    async def _acquire(self, request: ScopeAcquire) -> ScopeAnswer:
        if len(self._holds) >= self.max_holds:
            return ScopeAnswer(granted=False, budget="call_scope")
        scope = authority_scope(
            request.scope_id, request.max_tool_calls, request.max_parallel, request.max_depth
        )
        try:
            hold = await acquire_reservation(
                scope, request.reservation_id, request.tool or None, wait=False
            )
        except ToolCallRefused as exc:
            return ScopeAnswer(granted=False, budget=exc.budget, limit=exc.limit)
        self._holds[(request.caller, request.reservation_id)] = (scope, hold)
        return ScopeAnswer(granted=True)

    def release_node(self, node: str) -> int:
        """``node`` is gone: give back every slot its reservations hold. Returns how many."""
        gone = [key for key in self._holds if key[0] == node]
        for key in gone:
            scope, hold = self._holds.pop(key)
            release_reservation(scope, key[1], hold)
        return len(gone)


class NodeScopes:
    """The authority node ``owner`` of a turn's scope, from a node serving calls for it.

    Args:
        client: this node's NATS connection.
        node: this node (the reservations are made as it).
        owner: the node that keeps the scope.
        timeout_s: how long a reservation waits for ``owner``'s answer.
    """

    def __init__(
        self,
        client: Client,
        node: str,
        owner: str,
        *,
        timeout_s: float = DEFAULT_NODE_SCOPE_TIMEOUT_S,
    ) -> None:
        self._client = client
        self.node = node
        self.owner = owner
        self.timeout_s = timeout_s
        self._absent = False

    @property
    def absent(self) -> bool:
        """``owner`` answers no reservations (a node that predates them)."""
        return self._absent

    async def _release(self, rid: str) -> None:
        message = _encode(ScopeRelease(reservation_id=rid, caller=self.node))
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self._client.publish(scope_subject(self.owner), message)

    @asynccontextmanager
    async def reserve(self, scope: CallScope, *, tool: str, wait: bool) -> AsyncIterator[str]:
        """Count one call on ``owner`` and hold a slot there while the block runs (``wait``
        is not honoured: see the module docs); ``""`` when ``owner`` keeps no scopes.

        Raises:
            ToolCallRefused: a cap of the turn is reached.
            ScopeUnavailable: ``owner`` did not answer within ``timeout_s``.
        """
        if self._absent:
            yield ""
            return
        rid = new_id()
        request = ScopeAcquire(
            reservation_id=rid,
            caller=self.node,
            scope_id=scope.id,
            max_tool_calls=scope.max_tool_calls,
            max_parallel=scope.max_parallel,
            max_depth=scope.max_depth,
            tool=tool,
        )
        try:
            msg = await self._client.request(
                scope_subject(self.owner), _encode(request), timeout=self.timeout_s
            )
        except nats.errors.NoRespondersError:
            log.info("cluster: node %s keeps no call scopes: counted here", self.owner)
            self._absent = True
            yield ""
            return
        except BaseException as exc:
            await self._release(rid)  # it may have been taken: never hold a slot
            if isinstance(exc, Exception):
                why = f"node {self.owner} did not answer: {type(exc).__name__} {exc}".strip()
                raise ScopeUnavailable(why, tool=tool) from None
            raise
        answer = _decode_answer(msg.data)
        if not answer.granted:
            if answer.budget == "call_scope":
                raise ScopeUnavailable(f"node {self.owner} holds too many", tool=tool)
            raise ToolCallRefused(answer.budget, answer.limit, tool=tool)
        try:
            yield rid
        finally:
            await self._release(rid)
