"""The caps of one turn over every tool call made on its behalf, nested calls included.

A cognitive turn opens a :class:`CallScope`: how many tool calls it may make, how many may run
at once, how deep a chain of agent-to-agent calls may go. The scope is current (a context
variable) while the turn's tools run, so a tool that is an agent and calls tools in turn (an
in-process capability calling ``ctx.tool``, another agent's turn) finds it and counts against
it; a turn that starts inside a scope *joins* it instead of opening its own. A call counted
where it is made (by the loop) marks the frame counted, so that its route (the runtime, the
bridge) does not count it again; the tool's body then runs uncounted (:func:`enter_tool_body`,
from the registry), so each call the body makes counts on its own.

Across the bridge the scope travels in ``ToolCall.headers`` (:data:`SCOPE_HEADERS`; an old
peer ignores keys it does not know): its id, the depth, the caps left. A process that holds
the scope (the server, for a turn it runs) finds it by id and counts against it exactly; one
that does not rebuilds a detached copy with the caps left at the time of the call.

The server routes every call between processes, so it keeps one *shared* copy of each scope
held elsewhere (``frame_from_headers(..., shared=True)``; the scope of a turn running in an
agent's own process): every call made for that turn that crosses the server counts there, in
one count and one set of parallel slots, whichever process made it. The owning process marks
its calls (``loom-scope-owner``): it has counted them, and the calls left it reports bound
what the other processes' calls may still use; the turn's own calls also hold one of the
shared parallel slots (waiting for one, as in process) while they run. What the owner's
process runs without crossing the server (its own local tools) is counted there only, so the
server sends its copy's count back with the result of each of the owner's calls
(``ToolResult.scope_calls``): the owner's scope keeps the most it was told
(:meth:`CallScope.note_others`), and its :meth:`~CallScope.take` counts its own calls plus
those, so its local calls stop at the cap of the whole tree too. An agent process serving a
call pushed to it sends back, the same way, the calls its copy counted that never went to the
server (:meth:`CallScope.local_calls`: a turn it ran, joining the scope, calling its local
tools); the server adds them to its copy (:meth:`CallScope.add_calls`).

With an *authority* (:attr:`CallScope.authority`; docs/guardrails.md, "Across the bridge"),
a process does not count a capped turn's calls in its own copy at all: every call it makes
for the turn reserves its count and its parallel slot from the one process that keeps the
scope (the server) before it runs, and gives the slot back when it ends
(``runtime/tools/_scope_reserve.py``). Calls it sends through the server name their
reservation (``loom-scope-held``) or are counted there as they arrive
(``loom-scope-authority``). So the caps hold exactly over every process of the tree.

Why nested calls never wait for a parallel slot: their ancestors hold slots, so waiting could
wait on itself. A nested call takes a free slot or is refused at once
(:class:`ToolCallRefused`); only the turn's own calls queue for one.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, NamedTuple

import anyio

from .._ids import new_id
from ._errors import ToolError

if TYPE_CHECKING:
    from ._scope_reserve import ScopeAuthority

__all__ = [
    "SCOPE_HEADERS",
    "CallDepthExceeded",
    "CallFrame",
    "CallScope",
    "ToolCallRefused",
    "authority_scope",
    "current_frame",
    "enter_tool_body",
    "frame_from_headers",
    "in_frame",
    "reserved_call",
    "reset_frame",
    "scope_headers",
    "scoped_call",
    "set_frame",
    "shared_scope",
]

SCOPE_HEADERS = (
    "loom-scope",
    "loom-scope-depth",
    "loom-scope-caps",
    "loom-scope-counted",
    "loom-scope-owner",
    "loom-scope-authority",
    "loom-scope-held",
)
"""``ToolCall.headers`` keys of a call scope: its id; the depth the call is made from (a call
pushed to an agent: the depth it runs at); ``calls_left,parallel,max_depth`` (``-`` for no
cap); ``1`` when the caller has counted the call already; set (to the turn's
``max_tool_calls``, ``-`` for none) when the caller is the process whose turn holds the scope
(its count is the turn's own); ``1`` when the caller reserves the turn's calls from the
receiving server (:attr:`CallScope.authority`): the call is counted there unless it names a
live reservation in ``loom-scope-held``, which counted it and holds its slot already."""

MAX_SHARED_SCOPES = 4096
"""Shared copies of scopes held elsewhere that a server keeps (the least recently used one is
forgotten beyond: a call for it afterwards starts a new copy from the caps its headers say
are left)."""


class ToolCallRefused(ToolError):
    """A tool call was refused by a cap of the turn it was made for; nothing was called.

    Attributes:
        budget: ``max_tool_calls``, ``max_parallel_tool_calls`` or ``max_call_depth``.
        limit: the cap.
        owners: the refused call is one the turn's own process counted, refused by the
            server's shared copy of its scope (the other processes' calls used the rest):
            for that turn, its own call was refused, as when its process refuses it.
    """

    def __init__(
        self, budget: str, limit: int, *, tool: str | None = None, owners: bool = False
    ) -> None:
        self.budget = budget
        self.limit = limit
        self.owners = owners
        super().__init__(f"refused: {budget} ({limit}) reached", tool=tool)


class CallDepthExceeded(ToolCallRefused):
    """A chain of agent-to-agent calls would go deeper than ``max_call_depth``.

    Attributes:
        depth: the depth the call would have run at.
    """

    def __init__(self, depth: int, limit: int, *, tool: str | None = None) -> None:
        super().__init__("max_call_depth", limit, tool=tool)
        self.depth = depth
        self.args = (f"refused: call depth {depth} is deeper than max_call_depth ({limit})",)


class CallScope:
    """The caps of one turn, shared by every call made under it.

    Args:
        max_tool_calls: calls that may start under it (``None``: no cap).
        max_parallel: calls that may run at once (``None``: no cap).
        max_depth: how deep agent-to-agent calls may go (``None``: no cap).
        on_refused: told the budget's name each time a call is refused (a ledger counts).
        scope_id: a scope held by another process: its id (a copy rebuilt from headers,
            with the caps left; never found by :meth:`find`). ``None``: a new scope.
        authority: the process that keeps this scope's count and slots (the server), from
            which every call reserves both before it runs (see the module docs); ``None``:
            counted here.
    """

    def __init__(
        self,
        *,
        max_tool_calls: int | None = None,
        max_parallel: int | None = None,
        max_depth: int | None = None,
        on_refused: Callable[[str], None] | None = None,
        scope_id: str | None = None,
        authority: ScopeAuthority | None = None,
    ) -> None:
        self.id = scope_id or new_id()
        self.authority = authority
        self.detached = scope_id is not None
        self.max_tool_calls = max_tool_calls
        self.max_parallel = max_parallel
        self.max_depth = max_depth
        self.on_refused = on_refused
        self.tool_calls = 0
        """Calls started under it so far."""
        self.named_calls: int | None = None
        """The turn's ``max_tool_calls`` as refusals name it, when it differs from
        :attr:`max_tool_calls` (a server's shared copy: that is what the owner left)."""
        self.others = 0
        """Calls the other processes made for this turn, as the server last reported them
        (:meth:`note_others`; only ever grows): counted by :meth:`take`, not sent in
        :meth:`caps_left` (the server counts those itself)."""
        self.forwarded = 0
        """Calls made under it that went to the server (which counts them there too): the
        rest (:meth:`local_calls`) never crossed it."""
        self.in_flight = 0
        self.high_water = 0
        """The most calls that ran at once."""
        self._limiter = None if max_parallel is None else anyio.CapacityLimiter(max_parallel)
        self.reserved: dict[str, object] = {}
        """What the reservations of other processes hold, by reservation id: a slot here (as
        the authority), or a reservation made in turn from this copy's own authority."""
        self.reserved_ids: OrderedDict[str, None] = OrderedDict()
        """Reservations counted (an Acquire sent again is not counted twice), the latest
        :data:`MAX_SHARED_SCOPES`."""
        if not self.detached:
            _open_scopes[self.id] = self

    @property
    def exact(self) -> bool:
        """Its calls reserve from an authority (one that has not turned out to be absent)."""
        authority = self.authority
        return authority is not None and not authority.absent

    def holds(self, reservation_id: str) -> bool:
        """A reservation of that id holds one of its slots now (as the authority)."""
        return reservation_id in self.reserved

    @staticmethod
    def find(scope_id: str) -> CallScope | None:
        """The scope of that id, while a turn of this process holds it."""
        return _open_scopes.get(scope_id)

    def _calls_cap(self) -> int:
        named = self.named_calls if self.named_calls is not None else self.max_tool_calls
        assert named is not None
        return named

    def _refuse(self, budget: str, limit: int, tool: str | None) -> ToolCallRefused:
        if self.on_refused is not None:
            self.on_refused(budget)
        return ToolCallRefused(budget, limit, tool=tool)

    def take(self, tool: str | None = None) -> None:
        """Count one call.

        Raises:
            ToolCallRefused: ``max_tool_calls`` calls were made already.
        """
        if self.max_tool_calls is not None and self.tool_calls + self.others >= self.max_tool_calls:
            raise self._refuse("max_tool_calls", self._calls_cap(), tool)
        self.tool_calls += 1

    def note_others(self, calls: int) -> None:
        """The server's shared copy of this scope counted ``calls`` calls made by other
        processes so far (sent back with a result). Results may arrive out of order, and a
        count never goes down: the largest wins."""
        if calls > self.others:
            self.others = calls

    def local_calls(self) -> int:
        """Calls counted here that the server never saw: an agent process reports them with
        the result of the call pushed to it (``ToolResult.scope_calls``)."""
        return self.tool_calls - self.forwarded

    def add_calls(self, calls: int) -> None:
        """Count ``calls`` made elsewhere that were never counted here (an agent process's
        local calls for a call pushed to it): after the fact, so the count may pass the cap;
        the next call is refused then."""
        self.tool_calls += calls

    def slot(self, *, wait: bool, tool: str | None = None) -> _Slot:
        """A context manager holding one parallel slot while a call runs.

        Args:
            wait: wait for a free slot (the turn's own calls) or be refused at once (nested
                calls; see the module docs).

        Raises:
            ToolCallRefused: ``wait`` is false and every slot is taken.
        """
        return _Slot(self, wait, tool)

    def check_depth(self, depth: int, tool: str | None = None) -> None:
        """Raises :class:`CallDepthExceeded` when ``depth`` is past ``max_depth``."""
        if self.max_depth is not None and depth > self.max_depth:
            if self.on_refused is not None:
                self.on_refused("max_call_depth")
            raise CallDepthExceeded(depth, self.max_depth, tool=tool)

    def caps_left(self) -> str:
        calls = "-" if self.max_tool_calls is None else str(self.max_tool_calls - self.tool_calls)
        parallel = "-" if self.max_parallel is None else str(self.max_parallel)
        depth = "-" if self.max_depth is None else str(self.max_depth)
        return f"{calls},{parallel},{depth}"


_open_scopes: weakref.WeakValueDictionary[str, CallScope] = weakref.WeakValueDictionary()
"""Scopes of turns running in this process, by id: bounded by the turns alive."""

_shared_scopes: OrderedDict[str, CallScope] = OrderedDict()
"""Shared copies of scopes held by other processes (see the module docs), least recently used
first; at most :data:`MAX_SHARED_SCOPES`."""


class _Slot:
    """One parallel slot of a scope, held for the call's duration."""

    __slots__ = ("_scope", "_token", "_tool", "_wait")

    def __init__(self, scope: CallScope, wait: bool, tool: str | None) -> None:
        self._scope, self._wait, self._tool = scope, wait, tool
        self._token = object()

    async def __aenter__(self) -> None:
        scope = self._scope
        limiter = scope._limiter
        if limiter is not None:
            if self._wait:
                await limiter.acquire_on_behalf_of(self._token)
            else:
                try:
                    limiter.acquire_on_behalf_of_nowait(self._token)
                except anyio.WouldBlock:
                    assert scope.max_parallel is not None
                    raise scope._refuse(
                        "max_parallel_tool_calls", scope.max_parallel, self._tool
                    ) from None
        scope.in_flight += 1
        scope.high_water = max(scope.high_water, scope.in_flight)

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        scope = self._scope
        scope.in_flight -= 1
        if scope._limiter is not None:
            scope._limiter.release_on_behalf_of(self._token)


class CallFrame(NamedTuple):
    """Where a call is made from: its scope, the agent-to-agent depth, whether the call about
    to be made has been counted already (by the loop that made it), and whether it was
    counted by the process holding the scope, served here in a shared copy (``owned``)."""

    scope: CallScope
    depth: int = 0
    counted: bool = False
    owned: bool = False
    held: str = ""
    """The reservation the call about to be made holds in its scope's authority (``""``:
    none)."""


_frame: ContextVar[CallFrame | None] = ContextVar("loom_call_frame", default=None)


def current_frame() -> CallFrame | None:
    """The frame of the call being made now, or ``None`` outside any scope."""
    return _frame.get()


@contextlib.contextmanager
def in_frame(frame: CallFrame | None) -> Iterator[None]:
    """Make ``frame`` current while the block runs."""
    token = _frame.set(frame)
    try:
        yield
    finally:
        _frame.reset(token)


def set_frame(frame: CallFrame | None) -> Token[CallFrame | None]:
    """Make ``frame`` current until :func:`reset_frame` (for ``__aenter__``/``__aexit__``)."""
    return _frame.set(frame)


def reset_frame(token: Token[CallFrame | None]) -> None:
    """Undo the :func:`set_frame` that returned ``token``."""
    _frame.reset(token)


def enter_tool_body(tool: object) -> Token[CallFrame | None] | None:
    """Make current the frame ``tool``'s body runs in, when the call to it was counted
    already (a turn's own call: the loop counted it and holds its slot); undo with
    :func:`reset_frame`. ``None``: the frame stays as it is.

    The counted frame tells the call's *route* not to count it again (the runtime's
    :class:`scoped_call`, the bridge client's headers). A body that runs here (a function
    tool, an MCP or A2A client, a native tool) is past that route: the calls it makes are
    calls of their own, each counted and each taking a parallel slot, so its frame is the
    same scope at the same depth, uncounted and holding no reservation. A tool that only
    routes the call elsewhere (``routes_calls = True``, as a turn's view of another agent's
    capability) keeps the counted frame for its own hop.
    """
    frame = _frame.get()
    if frame is None or not frame.counted or getattr(tool, "routes_calls", False) is True:
        return None
    return _frame.set(CallFrame(frame.scope, frame.depth))


def scope_headers(*, pushed: bool = False) -> dict[str, str]:
    """The current frame as ``ToolCall.headers`` entries (empty outside any scope).

    Args:
        pushed: a call the server pushes to an agent's process (it is running at the
            frame's depth already).
    """
    frame = _frame.get()
    if frame is None:
        return {}
    headers = {
        "loom-scope": frame.scope.id,
        "loom-scope-depth": str(frame.depth),
        "loom-scope-caps": frame.scope.caps_left(),
    }
    if frame.scope.exact and not pushed:
        # The receiving server keeps the count and the slots: it counts this call unless
        # the reservation named holds it already.
        headers["loom-scope-authority"] = "1"
        if frame.held:
            headers["loom-scope-held"] = frame.held
        return headers
    if frame.counted and not pushed:
        headers["loom-scope-counted"] = "1"
    if not pushed and not frame.scope.detached:
        calls = frame.scope.max_tool_calls
        headers["loom-scope-owner"] = "-" if calls is None else str(calls)
    return headers


def frame_from_headers(
    headers: Mapping[str, str], *, pushed: bool = False, shared: bool = False
) -> CallFrame | None:
    """The frame a call served here runs in, from its headers (``None`` when they name no
    scope, or name it badly: an old or careless peer is served without caps).

    Args:
        pushed: the call was pushed to this agent's process by the server, which counted the
            hop already: the frame is one level up, since this runtime's ``call_tool``
            counts the hop into the local capability again.
        shared: this process routes calls between others (the server): a scope held
            elsewhere is counted in one shared copy, kept by id (see the module docs).
    """
    scope_id = headers.get("loom-scope", "")
    if not scope_id:
        return None
    try:
        depth = int(headers.get("loom-scope-depth", "0"))
        calls, parallel, max_depth = (
            None if part == "-" else int(part)
            for part in headers.get("loom-scope-caps", "-,-,-").split(",")
        )
    except ValueError:
        return None
    owned = False
    scope = CallScope.find(scope_id)
    if shared and headers.get("loom-scope-authority") == "1":
        # The caller reserves from this server: the count and slots are here, and the call is
        # counted already when it names a live reservation.
        scope = authority_scope(scope_id, calls, parallel, max_depth)
        held = headers.get("loom-scope-held", "")
        counted = bool(held) and scope.holds(held)
        return CallFrame(scope, depth - 1 if pushed else depth, counted or pushed)
    if scope is not None:
        # The caller counted in its own copy of a scope this process holds: count here too.
        counted = False
    elif shared:
        owner = headers.get("loom-scope-owner", "")
        owned = bool(owner)
        left = calls
        if left is not None and not owned and headers.get("loom-scope-counted") == "1":
            # Its sender counted it, and it is counted here again below: a copy started now
            # starts from what was left before it.
            left += 1
        scope = shared_scope(scope_id, left, parallel, max_depth)
        if owned:
            if owner.isdigit():
                scope.named_calls = int(owner)
            # The turn's process counted this call and every call of its own: the calls it
            # says are left are all the others' calls may use. Here, the copy's cap is what
            # the owner left and its count the calls the other processes made.
            limit = scope.max_tool_calls
            if calls is not None and (limit is None or calls < limit):
                scope.max_tool_calls = calls
        counted = owned
    else:
        scope = CallScope(
            max_tool_calls=calls, max_parallel=parallel, max_depth=max_depth, scope_id=scope_id
        )
        # Counted (or not) in the caller's copy, which is this one.
        counted = headers.get("loom-scope-counted") == "1"
    return CallFrame(scope, depth - 1 if pushed else depth, counted or pushed, owned)


def shared_scope(
    scope_id: str, calls: int | None, parallel: int | None, max_depth: int | None
) -> CallScope:
    """This server's shared copy of a scope held elsewhere, started with these caps when it
    has none (see the module docs; the least recently used beyond :data:`MAX_SHARED_SCOPES`
    is forgotten)."""
    scope = _shared_scopes.get(scope_id)
    if scope is not None:
        _shared_scopes.move_to_end(scope_id)
        return scope
    scope = CallScope(
        max_tool_calls=calls, max_parallel=parallel, max_depth=max_depth, scope_id=scope_id
    )
    _shared_scopes[scope_id] = scope
    while len(_shared_scopes) > MAX_SHARED_SCOPES:
        _shared_scopes.popitem(last=False)
    return scope


def authority_scope(
    scope_id: str, calls: int | None, parallel: int | None, max_depth: int | None
) -> CallScope:
    """The scope a reservation counts in, as its authority: the turn's own when it runs here,
    else the shared copy (started with these caps). A turn's own scope that reserves from an
    authority itself is not one (an agent connected to a server in its own process): the
    shared copy is."""
    scope = CallScope.find(scope_id)
    if scope is not None and scope.authority is None:
        return scope
    return shared_scope(scope_id, calls, parallel, max_depth)


class scoped_call:  # lower case: it reads as a call, ``async with scoped_call(...)``
    """Around one tool call routed by a runtime: count it against the current scope (unless
    the loop that made it did), take a parallel slot (never waiting: see the module docs),
    check the depth of a call into another agent, and make the callee's frame current.

    Outside any scope it does nothing.

    Args:
        tool: the tool's name (errors name it).
        to_agent: the call runs an agent's capability: one hop deeper.

    Raises:
        ToolCallRefused: a cap of the scope is reached (``CallDepthExceeded`` for the depth).
    """

    __slots__ = ("_slot", "_to_agent", "_token", "_tool")

    def __init__(self, tool: str, *, to_agent: bool) -> None:
        self._tool = tool
        self._to_agent = to_agent
        self._slot: _Slot | reserved_call | None = None
        self._token: Token[CallFrame | None] | None = None

    async def __aenter__(self) -> None:
        frame = _frame.get()
        if frame is None:
            return
        scope, tool = frame.scope, self._tool
        depth = frame.depth + 1 if self._to_agent else frame.depth
        if self._to_agent:
            scope.check_depth(depth, tool)
        if not frame.counted:
            reserved = reserved_call(scope, tool, wait=False)
            await reserved.__aenter__()
            self._slot = reserved
        elif frame.owned:
            # A call the owning process counted, in this server's shared copy: refused when
            # the other processes' calls used what the owner counted on; holding a shared
            # slot while it runs (the turn's own calls wait for one, as in process).
            limit = scope.max_tool_calls
            if limit is not None and scope.tool_calls > limit:
                refused = scope._refuse("max_tool_calls", scope._calls_cap(), tool)
                refused.owners = True
                raise refused
            slot = _Slot(scope, frame.depth == 0, tool)
            await slot.__aenter__()
            self._slot = slot
        self._token = _frame.set(CallFrame(scope, depth, False))

    async def __aexit__(self, *exc: object) -> None:
        if self._token is not None:
            _frame.reset(self._token)
        if self._slot is not None:
            await self._slot.__aexit__(*exc)


class reserved_call:  # lower case: it reads as a call, ``async with reserved_call(...)``
    """One call's count and parallel slot in ``scope``, held while the block runs: from the
    scope's authority when it has one (see the module docs), else here. Gives the reservation
    id held at the authority (``""``: counted here).

    Raises:
        ToolCallRefused: a cap of the scope is reached (``ScopeUnavailable``: the authority
            could not be asked; fail closed).
    """

    __slots__ = ("_held", "_scope", "_tool", "_wait")

    def __init__(self, scope: CallScope, tool: str | None, *, wait: bool) -> None:
        self._scope, self._tool, self._wait = scope, tool, wait
        self._held: contextlib.AbstractAsyncContextManager[str] | _Slot | None = None

    async def __aenter__(self) -> str:
        scope = self._scope
        authority = scope.authority
        if authority is not None and not authority.absent:
            reservation = authority.reserve(scope, tool=self._tool or "", wait=self._wait)
            held = await reservation.__aenter__()
            if held:
                self._held = reservation
                return held
            # The authority turned out to be absent (an older server): counted here.
            await reservation.__aexit__(None, None, None)
        scope.take(self._tool)
        slot = _Slot(scope, self._wait, self._tool)
        await slot.__aenter__()
        self._held = slot
        return ""

    async def __aexit__(self, *exc: object) -> bool | None:
        held, self._held = self._held, None
        if held is None:
            return None
        if isinstance(held, _Slot):
            held.release()
            return None
        return await held.__aexit__(*exc)  # type: ignore[arg-type]
