"""The loop's side of human approval: which calls wait, and what a waiting turn saves.

An :class:`ApprovalGate` given to a :class:`~loom.runtime.cognition.Loop` decides, per tool
call, with the tool's policy (``"always"``, ``"never"`` or a callable on the
:class:`ApprovalCall`), whether a human must approve it first. When one or more calls of a
model answer need approval, the turn runs the others, saves itself (:class:`SavedTurn`: the
goal, the step in progress, the results so far) with one approval request per waiting call
(:class:`~loom.runtime.Approvals`, SQLite), and ends with the outcome ``waiting_approval``:
its worker is free. Once every request of the step is decided, :meth:`Loop.resume` makes a
turn that starts from the saved step: approved calls run (through the effect journal when
the loop has one), denied and expired ones answer the model with the denial, the step is
recorded in memory, and the loop goes on with the next model call.

With ``ask_user=True`` the gate also stops every call of the built-in ``ask_user`` tool
(``_ask_user.py``): its request is a record of kind ``question``, and the resumed turn gives
the model the answer as the call's result (``loom.runtime._questions``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .._approval_store import ApprovalStore
from .._approvals import ApprovalCall, ApprovalPolicy, ApprovalRecord
from .._errors import InvalidArgument
from .._event import Event
from .._questions import ASK_USER_TOOL

__all__ = [
    "ApprovalGate",
    "SavedCall",
    "SavedTurn",
]


class SavedCall(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call of the step a waiting turn stopped at."""

    id: str
    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class SavedResult(msgspec.Struct, frozen=True, kw_only=True):
    """A tool result as saved (``loom.runtime.cognition.ToolResult``'s fields)."""

    iteration: int
    call_id: str
    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    content: str = ""
    is_error: bool = False
    error_type: str = ""
    duration_s: float = 0.0


class SavedTurn(msgspec.Struct, frozen=True, kw_only=True):
    """What a turn waiting for approval keeps, stored with each of its approval requests.

    Attributes:
        turn_id: the turn (the id of the event that started it).
        event: that event (to reply to it when the turn ends).
        goal: the turn's goal.
        iteration: the model call whose tool calls wait.
        text: that model call's text.
        text_mode: the step's calls came as text (``tool_calling = "text"``).
        calls: every call of that step, in order.
        done: results of the step's calls that needed no approval (already run).
        pending: the ids of the calls that wait.
        results: every tool result of the turn before this step.
        prompt_tokens: tokens so far.
        completion_tokens: tokens so far.
    """

    turn_id: str
    event: Event | None
    goal: str
    iteration: int
    text: str
    text_mode: bool
    calls: tuple[SavedCall, ...]
    done: tuple[SavedResult, ...]
    pending: tuple[str, ...]
    results: tuple[SavedResult, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def encode(self) -> bytes:
        """The bytes an approval record keeps."""
        return encode_state(self)

    @staticmethod
    def decode(data: bytes) -> SavedTurn:
        """The :class:`SavedTurn` an approval record keeps."""
        return decode_state(data)


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(SavedTurn)


def encode_state(saved: SavedTurn) -> bytes:
    """``saved`` as the bytes an approval record keeps."""
    return _state_encoder.encode(saved)


def decode_state(data: bytes) -> SavedTurn:
    """The :class:`SavedTurn` an approval record keeps."""
    return _state_decoder.decode(data)


class ApprovalGate:
    """Which tool calls of a loop wait for a human, and where they wait.

    Args:
        approvals: the store (``runtime.approvals``; an agent connected through the bridge:
            the server's, ``ctx.approvals``).
        policies: a policy per tool name; a name not listed has ``default``.
        default: the policy of every other tool (``"never"``).
        timeout_s: how long each request waits before it is denied (``None``: the store's
            default).
        ask_user: the turn's ``ask_user`` calls wait for the user's answer (a ``question``).
        question_timeout_s: how long a question waits before it expires (``None``: as
            ``timeout_s``).
    """

    def __init__(
        self,
        approvals: ApprovalStore,
        policies: Mapping[str, ApprovalPolicy] | None = None,
        *,
        default: ApprovalPolicy = "never",
        timeout_s: float | None = None,
        ask_user: bool = False,
        question_timeout_s: float | None = None,
    ) -> None:
        self.approvals = approvals
        self.policies: dict[str, ApprovalPolicy] = dict(policies or {})
        for name, policy in (*self.policies.items(), ("default", default)):
            if not callable(policy) and policy not in ("always", "never"):
                raise InvalidArgument(
                    f"approval policy of {name!r} is 'always', 'never' or a callable, "
                    f"not {policy!r}"
                )
        self.default = default
        self.timeout_s = timeout_s
        self.ask_user = ask_user
        self.question_timeout_s = (
            question_timeout_s if question_timeout_s is not None else timeout_s
        )

    def asks(self, tool: str) -> bool:
        """Whether a call of ``tool`` is a question to the user."""
        return self.ask_user and tool == ASK_USER_TOOL

    def needs(self, call: ApprovalCall) -> bool:
        """Whether ``call`` waits for a human (a policy that raises: it waits)."""
        if self.asks(call.tool):
            return True
        policy = self.policies.get(call.tool, self.default)
        if policy == "always":
            return True
        if policy == "never":
            return False
        assert callable(policy)
        try:
            return bool(policy(call))
        except Exception:  # fail closed: a broken policy asks rather than lets through
            return True

    async def suspend(
        self, saved: SavedTurn, *, agent_id: str, thread_id: str
    ) -> list[ApprovalRecord]:
        """Store one request per waiting call of ``saved``, each keeping the state."""
        state = encode_state(saved)
        records = []
        by_id = {c.id: c for c in saved.calls}
        for call_id in saved.pending:
            call = by_id[call_id]
            question = self.asks(call.name)
            records.append(
                await self.approvals.request(
                    agent_id=agent_id,
                    thread_id=thread_id,
                    turn_id=saved.turn_id,
                    call_id=call_id,
                    tool=call.name,
                    arguments=call.arguments,
                    state=state,
                    timeout_s=self.question_timeout_s if question else self.timeout_s,
                    kind="question" if question else "approval",
                )
            )
        return records


def denial_text(record: ApprovalRecord) -> str:
    """What the model reads for a call a human (or the deadline) did not approve."""
    if record.status == "expired":
        return f"{record.tool}: not approved in time; the call was not made"
    note = f" ({record.note})" if record.note else ""
    return f"{record.tool}: denied by a human reviewer{note}; the call was not made"
