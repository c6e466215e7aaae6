"""Reservations of a turn's calls at the one process that keeps its call scope.

A turn whose calls span processes is counted exactly when one process keeps its scope (the
*authority*: the server its agents are connected to) and every call of the tree, wherever it
runs, reserves its count and one parallel slot there **before** it runs and gives the slot
back when it ends. This module is both halves' runtime side:

* :class:`ScopeAuthority`, the seam a process reserves through (``CallScope.authority``; the
  bridge's ``RemoteScopes`` implements it over ``loom.v1.Scopes``), and
  :class:`ScopeUnavailable`, the refusal when it cannot be asked (fail closed);
* :func:`acquire_reservation` / :func:`release_reservation`, what the authority does with a
  reservation in its own copy of the scope (the bridge's ``ScopesServicer`` calls them).

What it costs: one round trip to the authority per call, paid only by turns with a cap on
tool calls or parallel calls (docs/guardrails.md, "Across the bridge").
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ._call_scope import MAX_SHARED_SCOPES, CallScope, ToolCallRefused, _Slot

__all__ = [
    "ScopeAuthority",
    "ScopeUnavailable",
    "acquire_reservation",
    "release_reservation",
    "slot_free",
]


class ScopeUnavailable(ToolCallRefused):
    """The authority over a turn's call scope (the server) could not be asked, or dropped the
    reservation while the call ran (the connection ended): the call is refused, or cut.

    A call whose count and slot nobody could reserve might pass the turn's caps, which is
    what the caps exist to prevent: it fails closed, as a model call whose budget could not be
    held does. ``budget`` is ``call_scope``.
    """

    def __init__(self, why: str, *, tool: str | None = None) -> None:
        super().__init__("call_scope", 0, tool=tool)
        self.why = why
        self.args = (f"refused: the turn's call scope could not be reserved: {why}",)


class ScopeAuthority(Protocol):
    """Where a process reserves the calls of a scope it does not keep (see the module docs)."""

    @property
    def absent(self) -> bool:
        """The authority turned out not to keep scopes (an older server): count locally."""
        ...

    def reserve(
        self, scope: CallScope, *, tool: str, wait: bool
    ) -> AbstractAsyncContextManager[str]:
        """Count one call of ``scope`` and hold one parallel slot while the block runs.

        Gives the reservation's id, or ``""`` when the authority is absent (nothing held: the
        caller counts the call itself).

        Args:
            wait: wait for a free slot (a turn's own call) rather than be refused at once.

        Raises:
            ToolCallRefused: a cap is reached.
            ScopeUnavailable: no answer in time, or the reservation was lost while the call
                ran (the block is cancelled, then this is raised).
        """
        ...


def _count_once(scope: CallScope, reservation_id: str, tool: str | None) -> None:
    if reservation_id in scope.reserved_ids:
        return  # sent again (a new stream after a broken one): counted already
    scope.take(tool)
    scope.reserved_ids[reservation_id] = None
    while len(scope.reserved_ids) > MAX_SHARED_SCOPES:
        scope.reserved_ids.popitem(last=False)


def slot_free(scope: CallScope) -> bool:
    """A parallel slot of ``scope`` is free now (or it has no parallel cap)."""
    limiter = scope._limiter
    return limiter is None or limiter.available_tokens >= 1


async def acquire_reservation(
    scope: CallScope, reservation_id: str, tool: str | None, *, wait: bool
) -> object:
    """As the authority: count a reserved call in ``scope`` (once per reservation id) and hold
    a parallel slot for it until :func:`release_reservation` (waiting for one when ``wait``).
    Gives the hold, which :func:`release_reservation` takes.

    Raises:
        ToolCallRefused: ``max_tool_calls`` reached, or (not waiting) every slot is taken;
            the count stays, as for a call refused its slot in process.
    """
    _count_once(scope, reservation_id, tool)
    slot = _Slot(scope, wait, tool)
    await slot.__aenter__()
    old = scope.reserved.pop(reservation_id, None)
    scope.reserved[reservation_id] = slot
    if isinstance(old, _Slot):
        old.release()  # the same call's earlier slot (its stream broke): one slot per call
    return slot


def release_reservation(scope: CallScope, reservation_id: str, hold: object) -> None:
    """As the authority: give back the slot ``hold`` of a reservation (its count stays);
    nothing when the reservation holds another slot since (sent again on a new stream)."""
    if scope.reserved.get(reservation_id) is hold:
        del scope.reserved[reservation_id]
        if isinstance(hold, _Slot):
            hold.release()
