"""A server tool that waits for a human (``NeedsApproval``), called by an agent in another
process whose turn a human approved the call for.

The agent's turn waited in this server's store (``bridge/_approvals_remote.py``); when it
resumes, its approved call is forwarded here with the approval's id in the
``loom-approval`` header. The server does not trust the other process's gate: it runs the
call as "ruled on" only when its own store shows that approval **approved**, its turn not
yet resumed, for this very tool and these very arguments, and only once per approval (a
second call naming it is refused as any ungated call is). Anything else runs as a call no
gate ruled on, which a ``NeedsApproval`` tool refuses.

"Once" is a mark in the store's SQLite file (:meth:`~loom.runtime.Approvals.use_once`),
written before the tool runs, so it holds across a restart of the server: a call that
crashed the server after its mark is not run again on that approval (the agent's effect
journal already reports such a call as interrupted rather than repeating it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import msgspec

from loom.runtime import AgentRuntime, ApprovalNotFound, InvalidArgument
from loom.runtime.tools import approval_ruled

from ._wire_types import ToolCallRequest

__all__ = ["APPROVAL_HEADER", "approved_scope"]

APPROVAL_HEADER: Final = "loom-approval"
"""``ToolCall.headers`` key: the id of the approval a human gave the call."""


async def approved_scope(
    runtime: AgentRuntime, request: ToolCallRequest
) -> contextlib.AbstractContextManager[None]:
    """The scope to run ``request`` in: ruled on, if the approval it names holds (see the
    module text); else nothing."""
    approval_id = request.headers.get(APPROVAL_HEADER, "")
    store = runtime.approvals
    if not approval_id or store is None:
        return contextlib.nullcontext()
    try:
        record = await store.get(approval_id)
    except (ApprovalNotFound, InvalidArgument):
        return contextlib.nullcontext()
    try:
        arguments = msgspec.json.decode(request.arguments or "{}")
    except msgspec.DecodeError:
        return contextlib.nullcontext()
    if (
        record.id != approval_id
        or record.status != "approved"
        or record.resumed
        or record.tool != request.name
        or record.arguments != arguments
        or not await store.use_once(record.id)
    ):
        return contextlib.nullcontext()
    return _ruled(record.id)


@contextlib.contextmanager
def _ruled(approval_id: str) -> Iterator[None]:
    with approval_ruled(approval_id):
        yield
