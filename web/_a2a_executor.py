"""One exposed agent behind the ``a2a-sdk``'s request handler: an A2A message becomes an event
in the agent's mailbox, and what the agent publishes about it becomes the task's updates.

The message goes to ``agent.{id}.replies`` (the mailbox every agent holds) as an event of type
``a2a.message`` whose thread is the A2A context id (a conversation continues across the
context's tasks, in the agent's memory) and whose ``reply_to`` is a topic of this call alone.
One subscription holds both that topic and the agent's stream topic, so what the agent
publishes reaches it in the order published (a ``CognitiveAgent`` emits ``turn.end`` before it
replies). Of the stream, only the events of this message's turn (``metadata["event_id"]``)
count:

=====================  ===========================================================
``turn.text``          status ``working``, an agent message with the text piece
``turn.tool_started``  status ``working``, a data part: the tool, its call id, arguments
``turn.tool_finished`` status ``working``, a data part: the tool's result
``turn.end``           ``answer``: an ``answer`` artifact, then ``completed`` with the
                       answer; ``cancelled``: ``canceled``; otherwise ``failed`` (the reason)
reply (no turn.end)    the reply of an agent that is not a ``CognitiveAgent``: its payload
                       as the answer (``agent.error`` and the like: ``failed``)
=====================  ===========================================================

A turn that ends ``waiting_approval`` ends the execution with the task ``input-required``
(``_a2a_approval.py`` says what its message holds and how to answer; for a question to the
user, ``_a2a_question.py``: the message is the question, the next one's text the answer). The
SDK calls
``execute`` again with the task's next message: a decision is given to ``runtime.approvals``
(``decided_by`` ``a2a``) and the execution follows the resumed turn (its events carry the
first event's id, its reply goes to the first reply topic). A decision made elsewhere (``loom
approve``, the dashboard) reaches :meth:`LoomExecutor.on_approval`, which opens the
subscription at once (before the agent is woken, so nothing is missed) and asks, through
``on_wake``, for an execution that follows it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from a2a.helpers import new_data_part, new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types import Message, Part, Task, TaskState
from a2a.utils.errors import TaskNotCancelableError
from google.protobuf.json_format import MessageToDict

from loom.runtime import (
    ApprovalAlreadyDecided,
    ApprovalChange,
    ApprovalNotFound,
    ApprovalRecord,
    Approvals,
    Envelope,
    Event,
    EventBus,
    LoomError,
    QoS,
    QuestionAlreadyAnswered,
    Subscription,
    TurnNotCancellable,
)
from loom.runtime.lowlevel import mailbox_topic, new_id

from ._a2a_agent import CancelTurn
from ._a2a_approval import (
    IDS_KEY,
    REPLY_KEY,
    TURN_KEY,
    UNSEEN_TEXT,
    WAKE_KEY,
    Parked,
    parked_from,
    parse_decision,
)
from ._a2a_question import question_answer, waiting_message_parts

__all__ = ["LoomExecutor"]

log = logging.getLogger("loom.web.a2a")

_TURN_TYPES = ("turn.text", "turn.tool_started", "turn.tool_finished", "turn.end")
_FAILED_REPLIES = {"agent.error", "agent.budget_exhausted"}
_decoder = msgspec.json.Decoder(dict[str, Any])
_INPUT_REQUIRED = TaskState.TASK_STATE_INPUT_REQUIRED


class LoomExecutor(AgentExecutor):
    """The ``AgentExecutor`` of one exposed agent (see the module's docstring).

    Args:
        bus: the server's bus.
        agent_id: the agent.
        stream_topic: where its turns' partial output goes.
        cancel_turn: cancels a turn in process (``tasks/cancel``); ``None``: a cancelled task
            stops being followed, the agent's turn runs on.
        approvals: the approval store of the runtime (read when needed: ``loom serve`` attaches
            it after the server is built); ``None``: no turn can wait.
        buffer: the bound of the subscription that follows one message.
    """

    def __init__(
        self,
        bus: EventBus,
        agent_id: str,
        *,
        stream_topic: str,
        cancel_turn: CancelTurn | None = None,
        approvals: Callable[[], Approvals | None] | None = None,
        buffer: int = 1024,
    ) -> None:
        self.bus = bus
        self.agent_id = agent_id
        self.stream_topic = stream_topic
        self.cancel_turn = cancel_turn
        self.approvals = approvals if approvals is not None else lambda: None
        self.buffer = buffer
        # Called (in line, must not block) when a task's approvals were decided elsewhere:
        # the caller runs an execution of that task, which follows the resumed turn.
        self.on_wake: Callable[[Parked, ApprovalRecord], None] | None = None
        # Tasks whose cancel() already wrote the terminal state: execute() must not write one.
        self._cancelled: set[str] = set()
        # Tasks whose turn cancel_turn_of() cancelled ahead of cancel().
        self._turn_cancelled: set[str] = set()
        # Tasks input-required on approvals, and which task each approval id is of.
        self._parked: dict[str, Parked] = {}
        self._by_approval: dict[str, str] = {}

    def _open(self, reply_to: str) -> Subscription:
        """Follow the agent's stream topic and ``reply_to``, live from this call on."""
        sub = self.bus.subscribe(self.stream_topic, qos=QoS.BATCHED, buffer_size=self.buffer)
        assert isinstance(sub, Subscription)
        sub.add_pattern(reply_to)
        return sub

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id = context.task_id or ""
        try:
            await self._execute(context, event_queue, task_id)
        finally:
            self._cancelled.discard(task_id)

    async def _execute(
        self, context: RequestContext, event_queue: EventQueue, task_id: str
    ) -> None:
        context_id = context.context_id or ""
        current = context.current_task
        if _is_wake(context.message):
            parked = self._parked.get(task_id)
            if parked is None or parked.sub is None:
                return  # the turn moved on already (its task was answered meanwhile)
        if current is None:
            history = [context.message] if context.message is not None else []
            await event_queue.enqueue_event(
                new_task(task_id, context_id, TaskState.TASK_STATE_SUBMITTED, history=history)
            )
        updater = TaskUpdater(event_queue, task_id, context_id)
        if current is not None and current.status.state == _INPUT_REQUIRED:
            await self._resume(context, updater, current)
            return
        text = context.get_user_input()
        if not text:
            await updater.reject(_agent_text(updater, "only text parts are understood"))
            return
        await updater.start_work()
        reply_to = f"a2a.replies.{new_id()}"
        event = Event(
            type="a2a.message",
            source="a2a",
            payload=text.encode(),
            metadata={"a2a.task_id": task_id, "a2a.context_id": context_id},
            envelope=Envelope(thread_id=context_id, reply_to=reply_to),
        )
        sub = self._open(reply_to)
        try:
            if await self.bus.publish(mailbox_topic(self.agent_id), event) == 0:
                await updater.failed(
                    _agent_text(updater, f"agent {self.agent_id} is not running on this server")
                )
                return
            await self._follow(updater, sub, event.id, reply_to)
        finally:
            sub.close()

    async def _follow(
        self, updater: TaskUpdater, sub: Subscription, turn_id: str, reply_to: str
    ) -> None:
        """Map the turn ``turn_id``'s updates until the task ends or goes input-required."""
        async for delivery in sub:
            got = delivery.event
            if delivery.topic == reply_to:
                await self._finish_with_reply(updater, got)
                return
            if got.metadata.get("event_id") != turn_id or got.type not in _TURN_TYPES:
                continue  # another conversation's turn, or a debug event
            if got.type == "turn.end":
                body = _decoder.decode(got.payload)
                if body.get("kind") == "waiting_approval":
                    ids = [str(i) for i in body.get("approval_ids", ())]
                    if await self._park(updater, turn_id, reply_to, ids):
                        return
                    continue  # decided already: the resumed turn follows on this subscription
            if await self._turn_update(updater, got):
                return
        # (The subscription closed: the bus is stopping; the SDK marks the task failed.)

    # ------------------------------------------------------------------ input-required

    async def _park(
        self, updater: TaskUpdater, turn_id: str, reply_to: str, ids: list[str]
    ) -> bool:
        """The turn waits for ``ids``: say ``input-required`` and return True; False when
        every one was decided already (the caller keeps following)."""
        approvals = self.approvals()
        if approvals is None:
            await self._terminal(
                updater, TaskState.TASK_STATE_FAILED, "the turn waits for an approval store"
            )
            return True
        parked = Parked(updater.task_id, updater.context_id, turn_id, reply_to, set(ids))
        # Registered before the records are read: a decision made meanwhile is seen by
        # on_approval (it only takes the id off ``pending`` until ``ready``).
        self.hold(parked)
        records = [await approvals.get(i) for i in ids]
        parked.pending -= {r.id for r in records if r.status != "pending"}
        if not parked.pending:
            self._release(parked)
            return False
        parked.ready = True
        await self._ask(updater, parked, [r for r in records if r.id in parked.pending])
        return True

    def hold(self, parked: Parked) -> None:
        """Keep ``parked`` waiting: a decision of its approvals made elsewhere moves it on."""
        self._parked[parked.task_id] = parked
        for approval_id in parked.pending:
            self._by_approval[approval_id] = parked.task_id

    def _release(self, parked: Parked) -> None:
        if self._parked.get(parked.task_id) is parked:
            del self._parked[parked.task_id]
        for approval_id in parked.pending:
            self._by_approval.pop(approval_id, None)

    async def _ask(
        self, updater: TaskUpdater, parked: Parked, records: list[ApprovalRecord], why: str = ""
    ) -> None:
        parts, kind = waiting_message_parts(records)
        if why:
            parts.insert(0, new_text_part(why))
        metadata = {
            TURN_KEY: parked.turn_id,
            REPLY_KEY: parked.reply_to,
            IDS_KEY: sorted(parked.pending),
        }
        message = updater.new_agent_message(parts, metadata=metadata)
        await updater.update_status(_INPUT_REQUIRED, message, metadata={"loom": kind})

    async def _resume(self, context: RequestContext, updater: TaskUpdater, current: Task) -> None:
        """The next message of a task ``input-required``: decide, then follow the turn."""
        task_id = updater.task_id
        approvals = self.approvals()
        parked = self._parked.get(task_id)
        if parked is None:  # a restart in between: the status message says what waits
            parked = parked_from(task_id, updater.context_id, current.status.message)
            if parked is None or approvals is None:
                await self._terminal(
                    updater, TaskState.TASK_STATE_FAILED, "this task waits for nothing Loom knows"
                )
                return
            records = [await approvals.get(i) for i in parked.pending]
            parked.pending = {r.id for r in records if r.status == "pending"}
            if not parked.pending:
                await self._terminal(updater, TaskState.TASK_STATE_FAILED, UNSEEN_TEXT)
                return
            parked.ready = True
            self.hold(parked)
        if parked.sub is None and (
            approvals is None or not await self._decide(context, updater, approvals, parked)
        ):
            return
        sub = parked.sub
        assert sub is not None
        self._release(parked)
        try:
            await updater.start_work()
            await self._follow(updater, sub, parked.turn_id, parked.reply_to)
        finally:
            sub.close()

    async def _decide(
        self, context: RequestContext, updater: TaskUpdater, approvals: Approvals, parked: Parked
    ) -> bool:
        """Give the message's decision to the store; True when the turn goes on."""
        pending = [await approvals.get(i) for i in sorted(parked.pending)]
        answer = question_answer(context.message, pending)
        if answer is not None:  # a question's answer (_a2a_question.py)
            return await self._answer_question(updater, approvals, parked, *answer)
        decision = parse_decision(context.message)
        # A decision is for the tool calls' approvals; a question is only answered (above).
        ids = sorted(r.id for r in pending if r.kind != "question")
        if decision is not None and decision.approval_id:
            ids = [i for i in ids if i.startswith(decision.approval_id)]
        if decision is None or not ids:
            why = (
                f"no approval {decision.approval_id} waits here."
                if decision is not None and decision.approval_id
                else "That message is no answer."
            )
            records = [await approvals.get(i) for i in sorted(parked.pending)]
            await self._ask(updater, parked, records, why)
            return False
        for approval_id in ids:
            self._by_approval.pop(approval_id, None)
            parked.pending.discard(approval_id)
        if not parked.pending:
            # Before the decision: its resumed turn is followed from its first update.
            parked.sub = self._open(parked.reply_to)
        decide = approvals.approve if decision.verdict == "approve" else approvals.deny
        for approval_id in ids:
            try:
                await decide(approval_id, note=decision.note, by="a2a")
            except ApprovalAlreadyDecided:
                pass  # decided elsewhere meanwhile: the turn goes on with that decision
            except ApprovalNotFound:
                log.warning("A2A task %s: approval %s is gone", parked.task_id, approval_id)
        if parked.pending:
            records = [await approvals.get(i) for i in sorted(parked.pending)]
            await self._ask(updater, parked, records)
            return False
        return True

    async def _answer_question(
        self,
        updater: TaskUpdater,
        approvals: Approvals,
        parked: Parked,
        question_id: str,
        text: str,
    ) -> bool:
        """Answer ``question_id`` with ``text``; True when the turn goes on."""
        self._by_approval.pop(question_id, None)
        parked.pending.discard(question_id)
        if not parked.pending:
            # Before the answer: its resumed turn is followed from its first update.
            parked.sub = self._open(parked.reply_to)
        try:
            await approvals.answer(question_id, text, by="a2a")
        except QuestionAlreadyAnswered:
            pass  # settled elsewhere meanwhile: the turn goes on with that
        except ApprovalNotFound:
            log.warning("A2A task %s: question %s is gone", parked.task_id, question_id)
        if parked.pending:
            records = [await approvals.get(i) for i in sorted(parked.pending)]
            await self._ask(updater, parked, records)
            return False
        return True

    def on_approval(self, change: ApprovalChange) -> None:
        """An approvals listener: a decision made elsewhere of the last approval a parked
        task waits for opens its subscription now (the agent is woken after this returns)
        and asks for an execution through ``on_wake``."""
        if change.kind != "decided":
            return
        task_id = self._by_approval.pop(change.record.id, None)
        parked = self._parked.get(task_id) if task_id is not None else None
        if parked is None:
            return
        parked.pending.discard(change.record.id)
        if parked.pending or not parked.ready or parked.sub is not None:
            return
        parked.sub = self._open(parked.reply_to)
        if self.on_wake is not None:
            self.on_wake(parked, change.record)

    # ------------------------------------------------------------------ updates

    async def _turn_update(self, updater: TaskUpdater, event: Event) -> bool:
        """Map one stream event of this message's turn; True when the task has ended."""
        body = _decoder.decode(event.payload)
        working = TaskState.TASK_STATE_WORKING
        match event.type:
            case "turn.text":
                message = _agent_text(updater, str(body.get("text", "")))
                await updater.update_status(working, message, metadata={"loom": "turn.text"})
            case "turn.tool_started":
                data = {k: body.get(k) for k in ("call_id", "name", "arguments", "iteration")}
                message = updater.new_agent_message([new_data_part(data)])
                await updater.update_status(
                    working, message, metadata={"loom": "turn.tool_started"}
                )
            case "turn.tool_finished":
                message = updater.new_agent_message([new_data_part(body.get("result", {}))])
                await updater.update_status(
                    working, message, metadata={"loom": "turn.tool_finished"}
                )
            case _:  # turn.end
                kind = str(body.get("kind", ""))
                if kind == "answer":
                    await self._answer(updater, str(body.get("answer", "")))
                elif kind == "cancelled":
                    await self._terminal(updater, TaskState.TASK_STATE_CANCELED, "")
                else:
                    why = str(body.get("error") or kind)
                    await self._terminal(updater, TaskState.TASK_STATE_FAILED, why)
                return True
        return False

    async def _finish_with_reply(self, updater: TaskUpdater, reply: Event) -> None:
        text = reply.payload.decode("utf-8", errors="replace")
        if reply.type in _FAILED_REPLIES:
            why = reply.metadata.get("error") or reply.type
            await self._terminal(updater, TaskState.TASK_STATE_FAILED, why)
        elif reply.type == "agent.cancelled":
            await self._terminal(updater, TaskState.TASK_STATE_CANCELED, "")
        else:
            await self._answer(updater, text)

    async def _answer(self, updater: TaskUpdater, answer: str) -> None:
        if updater.task_id in self._cancelled:
            return
        await updater.add_artifact([new_text_part(answer)], name="answer", last_chunk=True)
        await self._terminal(updater, TaskState.TASK_STATE_COMPLETED, answer)

    async def _terminal(self, updater: TaskUpdater, state: TaskState, text: str) -> None:
        if updater.task_id in self._cancelled:
            return  # cancel() wrote CANCELED already
        await updater.update_status(state, _agent_text(updater, text) if text else None)

    def cancel_turn_of(self, task_id: str, context_id: str) -> None:
        """Cancel the turn of a task about to be cancelled (``_CancellingHandler`` calls this
        before the SDK's own cancel, which marks a task ``failed`` when the executor's cancel
        raises; :meth:`cancel` then does not cancel it again).

        Raises:
            TaskNotCancelableError: the turn cannot be cancelled from here
                (``TurnNotCancellable``): refused, not ignored, so the task keeps running and
                its client is told why, rather than see ``canceled`` while the turn runs on.
        """
        if self.cancel_turn is None or not context_id:
            return
        try:
            stopped = self.cancel_turn(self.agent_id, context_id)
        except TurnNotCancellable as exc:
            raise TaskNotCancelableError(message=str(exc)) from None
        if task_id:
            self._turn_cancelled.add(task_id)
        log.debug("A2A cancel of task %s: turn cancelled: %s", task_id, stopped)

    def turn_cancel_done(self, task_id: str) -> None:
        """The cancel that :meth:`cancel_turn_of` began has ended (forget the task)."""
        self._turn_cancelled.discard(task_id)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """``tasks/cancel``: cancel the agent's turn in the task's thread (the agent then ends
        it ``cancelled``), and say ``canceled`` now; the SDK then cancels :meth:`execute`.
        (The turn may have been cancelled already by :meth:`cancel_turn_of`.)"""
        task_id, context_id = context.task_id or "", context.context_id or ""
        if task_id not in self._turn_cancelled:
            self.cancel_turn_of(task_id, context_id)
        self._cancelled.add(task_id)  # execute() forgets it as it ends
        parked = self._parked.get(task_id)
        if parked is not None:
            await self._deny_parked(parked)
        await TaskUpdater(event_queue, task_id, context_id).cancel()

    async def _deny_parked(self, parked: Parked) -> None:
        """A task cancelled while its turn waits: deny what it waits for, so the turn goes
        on (the model reads the denial) rather than hold its approvals until they expire."""
        self._release(parked)
        if parked.sub is not None:
            parked.sub.close()
        approvals = self.approvals()
        for approval_id in sorted(parked.pending) if approvals is not None else ():
            try:
                await approvals.deny(  # type: ignore[union-attr]
                    approval_id, note="the A2A task was canceled", by="a2a"
                )
            except LoomError as exc:  # decided meanwhile, or gone: nothing to deny
                log.debug("A2A cancel of task %s: %s", parked.task_id, exc)


def _agent_text(updater: TaskUpdater, text: str) -> Any:
    parts: list[Part] = [new_text_part(text)]
    return updater.new_agent_message(parts)


def _is_wake(message: Message | None) -> bool:
    """Whether ``message`` is the one ``on_wake``'s caller sends to follow a decision."""
    return message is not None and bool(MessageToDict(message.metadata).get(WAKE_KEY))
