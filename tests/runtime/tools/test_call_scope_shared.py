"""The server's shared copy of a call scope held by another process
(``frame_from_headers(..., shared=True)``): one count and one set of slots for every call that
crosses it, bounded by what the owning process says is left."""

from __future__ import annotations

import anyio
import pytest

from loom.runtime._ids import new_id
from loom.runtime.lowlevel import CallScope, frame_from_headers, in_frame
from loom.runtime.tools import ToolCallRefused
from loom.runtime.tools._call_scope import _shared_scopes, scoped_call

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]


def headers(scope_id: str, left: int, *, owner: bool = False, depth: int = 0) -> dict[str, str]:
    found = {
        "loom-scope": scope_id,
        "loom-scope-depth": str(depth),
        "loom-scope-caps": f"{left},2,-",
        "loom-scope-counted": "1",
    }
    if owner:
        found["loom-scope-owner"] = "5"
    return found


async def call(found: dict[str, str], *, shared: bool = True) -> bool:
    """One call served with these headers; whether the scope let it run."""
    frame = frame_from_headers(found, shared=shared)
    try:
        with in_frame(frame):
            async with scoped_call("t", to_agent=True):
                return True
    except ToolCallRefused as exc:
        if exc.budget != "max_tool_calls":
            raise
        return False


async def test_the_other_processes_calls_share_what_the_owner_left() -> None:
    scope_id = new_id()
    # The turn's process made its call (3 of 5 left after it): the calls its callees make
    # come back from two processes and count in one copy.
    assert await call(headers(scope_id, 3, owner=True))
    made = [await call(headers(scope_id, 3 - i % 2, depth=1)) for i in range(5)]
    assert made == [True, True, True, False, False]
    # The owner's next call (it counted it: 2 left by its count) finds the cap used; the
    # refusal names the turn's cap (the owner's header says it), for the turn's own call.
    frame = frame_from_headers(headers(scope_id, 2, owner=True), shared=True)
    with in_frame(frame), pytest.raises(ToolCallRefused) as refused:
        async with scoped_call("t", to_agent=True):
            pass
    assert (refused.value.limit, refused.value.owners) == (5, True)
    assert str(refused.value) == "t: refused: max_tool_calls (5) reached"


async def test_a_copy_first_met_through_a_callee_starts_before_its_call() -> None:
    scope_id = new_id()
    # The callee counted its call (2 left after it); here it is counted again: 2 left still.
    assert await call(headers(scope_id, 2, depth=1))
    assert [await call(headers(scope_id, 9, depth=1)) for _ in range(3)] == [True, True, False]


async def test_without_sharing_each_call_gets_its_own_copy() -> None:
    scope_id = new_id()
    assert all([await call(headers(scope_id, 1, depth=1), shared=False) for _ in range(5)])


async def test_the_owners_calls_hold_a_shared_slot() -> None:
    scope_id = new_id()
    own = frame_from_headers(headers(scope_id, 9, owner=True), shared=True)
    assert own is not None
    assert own.owned
    entered = anyio.Event()
    release = anyio.Event()

    async def owners_call() -> None:
        with in_frame(own):
            async with scoped_call("t", to_agent=True):
                entered.set()
                await release.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(owners_call)
            await entered.wait()
            # Two slots: the owner's call holds one; one nested call fits, a second does not.
            nested = frame_from_headers(headers(scope_id, 9, depth=1), shared=True)
            with in_frame(nested):
                async with scoped_call("t", to_agent=True):
                    with pytest.raises(ToolCallRefused, match="max_parallel_tool_calls"):
                        async with scoped_call("t", to_agent=True):
                            pass
            release.set()


async def test_the_shared_copies_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("loom.runtime.tools._call_scope.MAX_SHARED_SCOPES", 3)
    ids = [new_id() for _ in range(5)]
    for scope_id in ids:
        frame_from_headers(headers(scope_id, 1, owner=True), shared=True)
    assert set(ids[-3:]) <= set(_shared_scopes)
    assert not {ids[0], ids[1]} & set(_shared_scopes)
    assert CallScope.find(ids[-1]) is None  # a copy, never found as a scope held here


async def test_the_owner_counts_what_the_server_reports_the_others_used() -> None:
    # The count the server sends back with a result (ToolResult.scope_calls): the owner's
    # calls stop where its own and the others' reach the cap; a smaller (older, or from a
    # copy the server forgot) count never lowers it; the caps it sends stay its own.
    scope = CallScope(max_tool_calls=5)
    scope.take()
    scope.note_others(3)
    scope.note_others(1)
    assert scope.others == 3
    assert scope.caps_left() == "4,-,-"
    scope.take()
    with pytest.raises(ToolCallRefused, match=r"max_tool_calls \(5\)"):
        scope.take()
    assert scope.tool_calls == 2
