"""Human approval of tool calls: the records, their one store, and how a decision travels.

:class:`Approvals` keeps every approval a turn asked for in one SQLite file of the data
directory (``<data-dir>/approvals.sqlite3``), so a pending approval, and the turn state saved
with it, outlive a restart of the agent and of ``loom serve``. ``runtime.approvals`` is the
runtime's (``loom serve`` opens it; in code, give one to :class:`AgentRuntime`).

The life of one record::

    pending ──approve──> approved ──(the turn resumes, runs the call)──> resumed
            ──deny─────> denied   ──(the turn resumes, the model reads the denial)──> resumed
            ──timeout──> expired  ──(as denied)──> resumed

- :meth:`Approvals.request` stores it ``pending`` (once per agent, turn and call id: asking
  again returns the same record) and publishes ``approval.requested`` on the bus, durable
  when the bus's log stores ``approval.>`` (``loom serve`` registers that).
- :meth:`Approvals.approve`, :meth:`Approvals.deny` or the deadline decide it, exactly once
  (a second decision raises :class:`ApprovalAlreadyDecided`), then publish
  ``approval.decided`` on the bus and into the agent's mailbox, which wakes the agent to
  resume the turn. An agent that is not running then finds the decision when it starts
  (:meth:`Approvals.unresumed`), so a decision is never lost.
- A deadline that passed while the server was down expires at the next open.

A record of kind ``question`` (``_questions.py``) is a turn's question to the user: asked on
``input.requested``, settled by :meth:`Approvals.answer` (status ``answered``, the text in
``note``), withdrawn by :meth:`Approvals.deny`, expired by its deadline; the rest as above.

Listeners (:meth:`Approvals.add_listener`) are told each change (``requested``, ``decided``,
``resumed``): the seam for anything that maps a waiting turn elsewhere (A2A's
``input-required``).
"""

from __future__ import annotations

import builtins
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
import msgspec

from ._approval_uses import claim_use
from ._errors import InvalidArgument, LoomError
from ._event import Event, mailbox_topic
from ._ids import new_id
from ._questions import (
    INPUT_ANSWERED_TOPIC,
    INPUT_REQUESTED_TOPIC,
    ApprovalKind,
    NotAQuestion,
    QuestionAlreadyAnswered,
)
from ._sqlite_file import connect_fsynced

if TYPE_CHECKING:
    from ._bus import EventBus

__all__ = [
    "ApprovalAlreadyDecided",
    "ApprovalCall",
    "ApprovalChange",
    "ApprovalNotFound",
    "ApprovalPolicy",
    "ApprovalRecord",
    "ApprovalStats",
    "ApprovalStatus",
    "Approvals",
]

log = logging.getLogger("loom.runtime.approvals")

APPROVALS_FILENAME = "approvals.sqlite3"
REQUESTED_TOPIC = "approval.requested"
DECIDED_TOPIC = "approval.decided"
DEFAULT_TIMEOUT_S = 3600.0

ApprovalStatus = Literal["pending", "approved", "denied", "expired", "answered"]
"""Where a record stands; ``expired`` is a denial by the deadline; ``answered``: a question's."""

_T = TypeVar("_T")

_SCHEMA = """CREATE TABLE IF NOT EXISTS approvals (
    id          TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL,
    thread_id   TEXT NOT NULL,
    turn_id     TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    tool        TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    status      TEXT NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    decided_by  TEXT NOT NULL DEFAULT '',
    created_ms  INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    decided_ms  INTEGER NOT NULL DEFAULT 0,
    resumed     INTEGER NOT NULL DEFAULT 0,
    state       BLOB NOT NULL DEFAULT X'',
    kind        TEXT NOT NULL DEFAULT 'approval',
    UNIQUE (agent_id, turn_id, call_id)
)"""
_COLUMNS = (
    "id, agent_id, thread_id, turn_id, call_id, tool, arguments, status, note, decided_by, "
    "created_ms, deadline_ms, decided_ms, resumed, kind"
)

_encoder = msgspec.json.Encoder(enc_hook=str)


class ApprovalNotFound(LoomError, LookupError):
    """No approval has that id (or the prefix given matches none)."""

    def __init__(self, approval_id: str) -> None:
        self.approval_id = approval_id
        super().__init__(f"no approval {approval_id!r}")


class ApprovalAlreadyDecided(LoomError):
    """The approval was decided before (by a person or its deadline); nothing changed.

    Attributes:
        approval_id: the approval.
        status: how it was decided (``approved``, ``denied``, ``expired``).
        decided_by: who decided it.
    """

    def __init__(self, approval_id: str, status: str, decided_by: str = "") -> None:
        self.approval_id = approval_id
        self.status = status
        self.decided_by = decided_by
        by = f" by {decided_by}" if decided_by else ""
        super().__init__(f"approval {approval_id} is already {status}{by}")


class ApprovalCall(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call as an approval policy sees it.

    Attributes:
        tool: the tool's name.
        arguments: the call's arguments.
        call_id: the model's call id.
        agent_id: the agent whose turn makes it.
        thread_id: the conversation.
    """

    tool: str
    arguments: Mapping[str, Any]
    call_id: str = ""
    agent_id: str = ""
    thread_id: str = ""


ApprovalPolicy = Literal["always", "never"] | Callable[[ApprovalCall], bool]
"""Whether a tool's calls wait for a human: always, never, or when the callable says so."""


class ApprovalRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call waiting for (or given) a human's decision.

    Attributes:
        id: the approval's id (what ``loom approve`` takes; a unique prefix will do).
        agent_id: the agent whose turn asked.
        thread_id: the conversation.
        turn_id: the turn (the id of the event that started it).
        call_id: the model's tool call id.
        tool: the tool's name.
        arguments: the call's arguments.
        status: ``pending``, ``approved``, ``denied``, ``expired`` or (a question's)
            ``answered``.
        note: what the person deciding wrote (or why it expired).
        decided_by: who decided (``cli``, ``api``, ``dashboard``, ``timeout``).
        created_ms: when it was asked (Unix ms).
        deadline_ms: when it expires if nobody decides.
        decided_ms: when it was decided (0 while pending).
        resumed: the turn has resumed with the decision.
        kind: ``approval`` (a tool call waits) or ``question`` (the turn asks the user; the
            question in ``arguments["question"]``, the answer in ``note``).
    """

    id: str
    agent_id: str
    thread_id: str
    turn_id: str
    call_id: str
    tool: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    status: ApprovalStatus = "pending"
    note: str = ""
    decided_by: str = ""
    created_ms: int = 0
    deadline_ms: int = 0
    decided_ms: int = 0
    resumed: bool = False
    kind: ApprovalKind = "approval"


class ApprovalChange(msgspec.Struct, frozen=True, kw_only=True):
    """What a listener is told: ``requested`` (a turn starts waiting), ``decided`` (it may go
    on), ``resumed`` (it went on)."""

    kind: Literal["requested", "decided", "resumed"]
    record: ApprovalRecord


class ApprovalStats(msgspec.Struct, frozen=True, kw_only=True):
    """Approvals (and questions) now pending, and decisions since the store was opened;
    ``answered``: questions to the user answered (a withdrawn question counts as denied)."""

    pending: int = 0
    requested: int = 0
    approved: int = 0
    denied: int = 0
    expired: int = 0
    answered: int = 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _row(row: tuple[Any, ...]) -> ApprovalRecord:
    return ApprovalRecord(
        id=row[0],
        agent_id=row[1],
        thread_id=row[2],
        turn_id=row[3],
        call_id=row[4],
        tool=row[5],
        arguments=msgspec.json.decode(row[6]),
        status=row[7],
        note=row[8],
        decided_by=row[9],
        created_ms=row[10],
        deadline_ms=row[11],
        decided_ms=row[12],
        resumed=bool(row[13]),
        kind=row[14],
    )


class Approvals:
    """The approvals of one runtime, in one SQLite file (see the module text).

    Args:
        path: the file (``Approvals.in_data_dir(data_dir)``).
        bus: where ``approval.requested`` and ``approval.decided`` are published (and the
            agents' mailboxes are).
        default_timeout_s: how long a request waits when it names no timeout (1 h).
        policies: the runtime's approval policy per tool name (``loom serve``: those of
            ``[tools]``); every agent's :class:`~loom.runtime.cognition.ApprovalGate` starts
            from them.

    Use as an async context manager: it runs the deadline timer in its task group.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        bus: EventBus | None = None,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
        policies: Mapping[str, ApprovalPolicy] | None = None,
    ) -> None:
        if not default_timeout_s > 0:
            raise InvalidArgument(f"default_timeout_s must be > 0, not {default_timeout_s!r}")
        self.path = Path(path)
        self.bus = bus
        self.default_timeout_s = default_timeout_s
        self.policies: dict[str, ApprovalPolicy] = dict(policies or {})
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._tg: anyio.abc.TaskGroup | None = None
        self._deadlines: dict[str, int] = {}
        self._wake = anyio.Event()
        self._waiters: dict[str, anyio.Event] = {}
        self._listeners: list[Callable[[ApprovalChange], None]] = []
        self._requested = self._approved = self._denied = self._expired = self._answered = 0

    @staticmethod
    def in_data_dir(data_dir: str | os.PathLike[str]) -> Path:
        """The store's path in a data directory: ``<data_dir>/approvals.sqlite3``."""
        return Path(data_dir) / APPROVALS_FILENAME

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        self._conn = await anyio.to_thread.run_sync(connect_fsynced, self.path, _SCHEMA)
        await self._sql(_add_kind_column)
        pending = await self._sql(
            lambda c: c.execute(
                "SELECT id, deadline_ms FROM approvals WHERE status = 'pending'"
            ).fetchall()
        )
        self._deadlines = {row[0]: row[1] for row in pending}
        self._tg = await anyio.create_task_group().__aenter__()
        self._tg.start_soon(self._expire_loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the timer and close the file; idempotent. Pending records stay pending."""
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    async def _sql(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None:
            raise LoomError(f"the approvals store {self.path} is not open")
        return await anyio.to_thread.run_sync(lambda: fn(conn), limiter=self._limiter)

    def add_listener(self, listener: Callable[[ApprovalChange], None]) -> None:
        """Call ``listener`` on every change, in line (it must not block)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[ApprovalChange], None]) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def _tell(self, kind: Literal["requested", "decided", "resumed"], rec: ApprovalRecord) -> None:
        for listener in list(self._listeners):
            try:
                listener(ApprovalChange(kind=kind, record=rec))
            except Exception:  # a listener's bug never breaks a decision
                log.exception("approval listener %r failed", listener)

    # ------------------------------------------------------------------ asking

    async def request(
        self,
        *,
        agent_id: str,
        thread_id: str,
        turn_id: str,
        call_id: str,
        tool: str,
        arguments: dict[str, Any],
        state: bytes = b"",
        timeout_s: float | None = None,
        kind: ApprovalKind = "approval",
    ) -> ApprovalRecord:
        """Store a pending approval (with the turn's saved ``state``) and announce it.

        Asking again for the same agent, turn and call returns the existing record.
        ``kind="question"``: the turn asks the user ``arguments["question"]`` instead.
        """
        timeout = self.default_timeout_s if timeout_s is None else timeout_s
        if not timeout > 0:
            raise InvalidArgument(f"timeout_s must be > 0, not {timeout_s!r}")
        now = _now_ms()
        deadline = now + int(timeout * 1000) if math.isfinite(timeout) else 2**62
        approval_id = new_id()
        args_text = _encoder.encode(arguments).decode()

        def insert(c: sqlite3.Connection) -> tuple[bool, tuple[Any, ...]]:
            cur = c.execute(
                "INSERT OR IGNORE INTO approvals (id, agent_id, thread_id, turn_id, call_id, "
                "tool, arguments, status, created_ms, deadline_ms, state, kind) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                (approval_id, agent_id, thread_id, turn_id, call_id, tool, args_text, now,
                 deadline, state, kind),
            )  # fmt: skip
            row = c.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE agent_id = ? AND turn_id = ? "
                "AND call_id = ?",
                (agent_id, turn_id, call_id),
            ).fetchone()
            return cur.rowcount > 0, row

        created, row = await self._sql(insert)
        rec = _row(row)
        if created:
            self._requested += 1
            self._deadlines[rec.id] = rec.deadline_ms
            self._wake.set()
            if rec.kind == "question":
                log.info(
                    "question %s: agent %s asks the user %r (thread %s)",
                    rec.id,
                    rec.agent_id,
                    rec.arguments.get("question", ""),
                    rec.thread_id,
                )
            else:
                log.info(
                    "approval %s: agent %s waits to call %s (thread %s)",
                    rec.id,
                    rec.agent_id,
                    rec.tool,
                    rec.thread_id,
                )
            self._tell("requested", rec)
            await self._publish(REQUESTED_TOPIC, rec)
        return rec

    # ------------------------------------------------------------------ reading

    async def get(self, approval_id: str) -> ApprovalRecord:
        """The record of ``approval_id`` (or of the one id it is a unique prefix of).

        Raises:
            ApprovalNotFound: no such id.
            InvalidArgument: the prefix matches several.
        """
        rows = await self._sql(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE id = ? OR "
                "(length(?) >= 4 AND substr(id, 1, length(?)) = ?) LIMIT 3",
                (approval_id, approval_id, approval_id, approval_id),
            ).fetchall()
        )
        exact = [r for r in rows if r[0] == approval_id]
        if exact:
            return _row(exact[0])
        if not rows:
            raise ApprovalNotFound(approval_id)
        if len(rows) > 1:
            raise InvalidArgument(f"approval id prefix {approval_id!r} matches several")
        return _row(rows[0])

    async def list(
        self, *, status: ApprovalStatus | None = "pending", agent_id: str | None = None
    ) -> list[ApprovalRecord]:
        """Records, oldest first: the pending ones by default (``status=None``: all)."""
        sql = f"SELECT {_COLUMNS} FROM approvals WHERE 1 = 1"
        params: list[Any] = []
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if agent_id is not None:
            sql += " AND agent_id = ?"
            params.append(agent_id)
        rows = await self._sql(
            lambda c: c.execute(sql + " ORDER BY created_ms, id", params).fetchall()
        )
        return [_row(r) for r in rows]

    async def for_turn(self, agent_id: str, turn_id: str) -> builtins.list[ApprovalRecord]:
        """Every record of one turn, oldest first."""
        rows = await self._sql(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE agent_id = ? AND turn_id = ? "
                "ORDER BY created_ms, id",
                (agent_id, turn_id),
            ).fetchall()
        )
        return [_row(r) for r in rows]

    async def unresumed(self, agent_id: str) -> builtins.list[ApprovalRecord]:
        """Decided records of ``agent_id`` whose turn has not resumed yet (an agent that was
        not running when they were decided resumes them when it starts)."""
        rows = await self._sql(
            lambda c: c.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE agent_id = ? AND status != 'pending' "
                "AND resumed = 0 ORDER BY created_ms, id",
                (agent_id,),
            ).fetchall()
        )
        return [_row(r) for r in rows]

    async def state(self, approval_id: str) -> bytes:
        """The turn state saved with the request."""
        row = await self._sql(
            lambda c: c.execute(
                "SELECT state FROM approvals WHERE id = ?", (approval_id,)
            ).fetchone()
        )
        if row is None:
            raise ApprovalNotFound(approval_id)
        return bytes(row[0])

    async def mark_resumed(self, agent_id: str, turn_id: str) -> None:
        """The turn went on with its decisions: its records leave :meth:`unresumed`."""
        await self._sql(
            lambda c: c.execute(
                "UPDATE approvals SET resumed = 1 WHERE agent_id = ? AND turn_id = ? "
                "AND status != 'pending'",
                (agent_id, turn_id),
            )
        )
        for rec in await self.for_turn(agent_id, turn_id):
            log.info("approval %s: the turn of agent %s resumed (%s)", rec.id, agent_id, rec.status)
            self._tell("resumed", rec)

    # ------------------------------------------------------------------ deciding

    async def use_once(self, approval_id: str) -> bool:
        """Mark the approved call of ``approval_id`` used by the call it was given for, on
        disk (``_approval_uses.py``); ``False`` when it was used already, before a restart
        too."""
        now = _now_ms()
        return await self._sql(lambda c: claim_use(c, approval_id, now))

    async def approve(self, approval_id: str, *, note: str = "", by: str = "api") -> ApprovalRecord:
        """Approve: the turn resumes and runs the call.

        Raises:
            ApprovalNotFound: no such id.
            ApprovalAlreadyDecided: it was decided before; nothing changed.
            NotAQuestion: it is a question (answer it instead).
        """
        return await self._decide(approval_id, "approved", note, by)

    async def answer(self, question_id: str, text: str, *, by: str = "api") -> ApprovalRecord:
        """Answer a question: the turn resumes and the model reads ``text`` as the result of
        its ``ask_user`` call.

        Raises:
            ApprovalNotFound: no such id.
            QuestionAlreadyAnswered: it was answered, withdrawn or expired before.
            NotAQuestion: it is a tool call's approval (approve or deny it instead).
        """
        return await self._decide(question_id, "answered", text, by)

    async def deny(self, approval_id: str, *, note: str = "", by: str = "api") -> ApprovalRecord:
        """Deny: the turn resumes without running the call; the model reads the denial.

        Raises:
            ApprovalNotFound: no such id.
            ApprovalAlreadyDecided: it was decided before; nothing changed.
        """
        return await self._decide(approval_id, "denied", note, by)

    async def wait(self, approval_id: str) -> ApprovalRecord:
        """Wait until ``approval_id`` is decided; return its record."""
        full_id = (await self.get(approval_id)).id
        while True:
            # Registered before the read: a decision made after it sets this event.
            event = self._waiters.setdefault(full_id, anyio.Event())
            rec = await self.get(full_id)
            if rec.status != "pending":
                if self._waiters.get(full_id) is event:
                    del self._waiters[full_id]
                return rec
            await event.wait()

    async def _decide(
        self, approval_id: str, status: ApprovalStatus, note: str, by: str
    ) -> ApprovalRecord:
        rec = await self.get(approval_id)
        # deny and the deadline settle both kinds (a withdrawn question reads as declined).
        if (status == "answered" and rec.kind != "question") or (
            status == "approved" and rec.kind == "question"
        ):
            raise NotAQuestion(rec.id, rec.kind)
        now = _now_ms()

        def update(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "UPDATE approvals SET status = ?, note = ?, decided_by = ?, decided_ms = ? "
                "WHERE id = ? AND status = 'pending'",
                (status, note, by, now, rec.id),
            )
            return cur.rowcount

        if await self._sql(update) == 0:
            now_rec = await self.get(rec.id)
            if now_rec.kind == "question":
                raise QuestionAlreadyAnswered(now_rec.id, now_rec.status, now_rec.decided_by)
            raise ApprovalAlreadyDecided(now_rec.id, now_rec.status, now_rec.decided_by)
        decided = msgspec.structs.replace(
            rec, status=status, note=note, decided_by=by, decided_ms=now
        )
        self._deadlines.pop(rec.id, None)
        if status == "answered":
            self._answered += 1
        elif status == "approved":
            self._approved += 1
        elif status == "denied":
            self._denied += 1
        else:
            self._expired += 1
        waiter = self._waiters.pop(rec.id, None)
        if waiter is not None:
            waiter.set()
        log.info("approval %s: %s by %s", rec.id, status, by)
        self._tell("decided", decided)
        await self._publish(DECIDED_TOPIC, decided)
        # Into the agent's mailbox: its worker resumes the turn (none is held meanwhile).
        await self._publish(mailbox_topic(decided.agent_id), decided)
        return decided

    async def _expire_loop(self) -> None:
        while True:
            self._wake = anyio.Event()
            now = _now_ms()
            due = [i for i, d in self._deadlines.items() if d <= now]
            for approval_id in due:
                try:
                    await self._decide(approval_id, "expired", "no decision in time", "timeout")
                except (ApprovalAlreadyDecided, QuestionAlreadyAnswered, ApprovalNotFound):
                    self._deadlines.pop(approval_id, None)
            if due:
                continue
            wait_s = (min(self._deadlines.values()) - now) / 1000 if self._deadlines else math.inf
            with anyio.move_on_after(min(wait_s, 3600.0)):
                await self._wake.wait()

    async def _publish(self, topic: str, rec: ApprovalRecord) -> None:
        bus = self.bus
        if bus is None:
            return
        if rec.kind == "question" and topic in (REQUESTED_TOPIC, DECIDED_TOPIC):
            topic = INPUT_REQUESTED_TOPIC if topic == REQUESTED_TOPIC else INPUT_ANSWERED_TOPIC
        if topic.startswith("input."):
            kind = topic
        else:  # the mailbox's wake-up is approval.decided for both kinds (the agent resumes)
            kind = REQUESTED_TOPIC if topic == REQUESTED_TOPIC else DECIDED_TOPIC
        event = Event(
            type=kind,
            source="loom.approvals",
            payload=_encoder.encode(rec),
            metadata={"approval_id": rec.id, "agent_id": rec.agent_id, "status": rec.status},
        )
        try:
            await bus.publish(topic, event)
        except LoomError as exc:  # stored already: the agent finds it when it starts
            log.warning("approval %s: cannot publish on %s: %r", rec.id, topic, exc)

    def statistics(self) -> ApprovalStats:
        """Pending now; requested and decided since open."""
        return ApprovalStats(
            pending=len(self._deadlines),
            requested=self._requested,
            approved=self._approved,
            denied=self._denied,
            expired=self._expired,
            answered=self._answered,
        )


def _add_kind_column(conn: sqlite3.Connection) -> None:
    # A file written before questions existed has no kind column: its records are approvals.
    columns = {row[1] for row in conn.execute("PRAGMA table_info(approvals)")}
    if "kind" not in columns:
        conn.execute("ALTER TABLE approvals ADD COLUMN kind TEXT NOT NULL DEFAULT 'approval'")


def decode_record(payload: bytes) -> ApprovalRecord:
    """The record an ``approval.*`` event carries."""
    return msgspec.json.decode(payload, type=ApprovalRecord)
