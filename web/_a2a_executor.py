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

A turn that pauses for input is where ``input-required`` will go: a stream event saying so
would end :meth:`LoomExecutor.execute` with ``updater.requires_input(...)`` and leave the task
interrupted; the SDK then calls ``execute`` again with the next message of that task, which is
delivered like the first (same thread), so the paused turn can take it as its answer.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from a2a.helpers import new_data_part, new_task, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.tasks import TaskUpdater
from a2a.types import Part, TaskState

from loom.runtime import Envelope, Event, EventBus, QoS
from loom.runtime.lowlevel import mailbox_topic, new_id

from ._a2a_agent import CancelTurn

__all__ = ["LoomExecutor"]

log = logging.getLogger("loom.web.a2a")

_TURN_TYPES = ("turn.text", "turn.tool_started", "turn.tool_finished", "turn.end")
_FAILED_REPLIES = {"agent.error", "agent.budget_exhausted"}
_decoder = msgspec.json.Decoder(dict[str, Any])


class LoomExecutor(AgentExecutor):
    """The ``AgentExecutor`` of one exposed agent (see the module's docstring).

    Args:
        bus: the server's bus.
        agent_id: the agent.
        stream_topic: where its turns' partial output goes.
        cancel_turn: cancels a turn in process (``tasks/cancel``); ``None``: a cancelled task
            stops being followed, the agent's turn runs on.
        buffer: the bound of the subscription that follows one message.
    """

    def __init__(
        self,
        bus: EventBus,
        agent_id: str,
        *,
        stream_topic: str,
        cancel_turn: CancelTurn | None = None,
        buffer: int = 1024,
    ) -> None:
        self.bus = bus
        self.agent_id = agent_id
        self.stream_topic = stream_topic
        self.cancel_turn = cancel_turn
        self.buffer = buffer
        # Tasks whose cancel() already wrote the terminal state: execute() must not write one.
        self._cancelled: set[str] = set()

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
        if context.current_task is None:
            history = [context.message] if context.message is not None else []
            await event_queue.enqueue_event(
                new_task(task_id, context_id, TaskState.TASK_STATE_SUBMITTED, history=history)
            )
        updater = TaskUpdater(event_queue, task_id, context_id)
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
        async with self.bus.subscribe(
            self.stream_topic, qos=QoS.BATCHED, buffer_size=self.buffer
        ) as sub:
            sub.add_pattern(reply_to)
            if await self.bus.publish(mailbox_topic(self.agent_id), event) == 0:
                await updater.failed(
                    _agent_text(updater, f"agent {self.agent_id} is not running on this server")
                )
                return
            async for delivery in sub:
                got = delivery.event
                if delivery.topic == reply_to:
                    await self._finish_with_reply(updater, got)
                    return
                if got.metadata.get("event_id") != event.id or got.type not in _TURN_TYPES:
                    continue  # another conversation's turn, or a debug event
                if await self._turn_update(updater, got):
                    return
        # (The subscription closed: the bus is stopping; the SDK marks the task failed.)

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

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        """``tasks/cancel``: cancel the agent's turn in the task's thread (the agent then ends
        it ``cancelled``), and say ``canceled`` now; the SDK then cancels :meth:`execute`."""
        task_id, context_id = context.task_id or "", context.context_id or ""
        if self.cancel_turn is not None and context_id:
            stopped = self.cancel_turn(self.agent_id, context_id)
            log.debug("A2A cancel of task %s: turn cancelled: %s", task_id, stopped)
        self._cancelled.add(task_id)  # execute() forgets it as it ends
        await TaskUpdater(event_queue, task_id, context_id).cancel()


def _agent_text(updater: TaskUpdater, text: str) -> Any:
    parts: list[Part] = [new_text_part(text)]
    return updater.new_agent_message(parts)
