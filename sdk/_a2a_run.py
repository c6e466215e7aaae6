"""What one call of an :class:`~loom.A2AAgentTool` has heard of its remote task: the events of
its stream (or the task as ``tasks/get`` answers it) folded into a state, the artifacts kept
within a bound, and the result, or the typed error, they come to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from a2a.types import Message, Part, StreamResponse, Task, TaskState
from google.protobuf.json_format import MessageToDict

from loom.runtime.tools import stream_tool_output

from ._a2a_errors import A2AAuthFailed, A2ATaskFailed, A2AUnreachable

__all__ = ["SETTLED", "Run"]

_STATES: dict[int, str] = {
    TaskState.TASK_STATE_SUBMITTED: "submitted",
    TaskState.TASK_STATE_WORKING: "working",
    TaskState.TASK_STATE_COMPLETED: "completed",
    TaskState.TASK_STATE_FAILED: "failed",
    TaskState.TASK_STATE_CANCELED: "canceled",
    TaskState.TASK_STATE_REJECTED: "rejected",
    TaskState.TASK_STATE_INPUT_REQUIRED: "input-required",
    TaskState.TASK_STATE_AUTH_REQUIRED: "auth-required",
}
# States in which the remote side has stopped working on the task (for now, or for good).
SETTLED: set[int] = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
    TaskState.TASK_STATE_INPUT_REQUIRED,
    TaskState.TASK_STATE_AUTH_REQUIRED,
}
_FAILED: set[int] = {
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
}


class Run:
    """What one call has heard of its remote task so far: state, artifacts, last message."""

    def __init__(self, url: str, max_bytes: int) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.kept = 0  # bytes of parts kept
        self.cut = 0  # bytes of parts dropped beyond max_bytes
        self.pieces = 0
        self.task_id = ""
        self.context_id = ""
        self.state: int = TaskState.TASK_STATE_UNSPECIFIED
        self.message: Message | None = None  # the agent's status message, or direct answer
        self.answered = False  # a Message answered the request: no task
        self.artifacts: dict[str, list[Part]] = {}

    async def follow(self, events: AsyncIterator[StreamResponse], *, stream: bool) -> None:
        async for event in events:
            if event.HasField("task"):
                self.take_task(event.task)
            elif event.HasField("message"):
                self.message, self.answered = event.message, True
                self.context_id = event.message.context_id
            elif event.HasField("status_update"):
                update = event.status_update
                self.task_id = update.task_id or self.task_id
                self.context_id = update.context_id or self.context_id
                self.state = update.status.state
                if update.status.HasField("message"):
                    self.message = update.status.message
                    if stream and self.state not in SETTLED:
                        await self._piece(_text(update.status.message.parts))
            elif event.HasField("artifact_update"):
                chunk = event.artifact_update
                self.task_id = chunk.task_id or self.task_id
                artifact = chunk.artifact
                parts = self.artifacts.setdefault(artifact.artifact_id, [])
                if not chunk.append:
                    self.kept -= sum(p.ByteSize() for p in parts)
                    parts.clear()
                self._keep(parts, artifact.parts)
                if stream:
                    await self._piece(_text(artifact.parts))
            if self.answered or self.state in SETTLED:
                return

    def take_task(self, task: Task) -> None:
        self.task_id, self.context_id = task.id, task.context_id
        self.state = task.status.state
        if task.status.HasField("message"):
            self.message = task.status.message
        for artifact in task.artifacts:  # the whole task: its artifacts replace ours
            old = self.artifacts.get(artifact.artifact_id, [])
            self.kept -= sum(p.ByteSize() for p in old)
            kept: list[Part] = []
            self.artifacts[artifact.artifact_id] = kept
            self._keep(kept, artifact.parts)

    def _keep(self, into: list[Part], parts: Any) -> None:
        for part in parts:
            size = part.ByteSize()
            if self.kept + size > self.max_bytes:
                self.cut += size
            else:
                self.kept += size
                into.append(part)

    async def _piece(self, text: str) -> None:
        if text:
            self.pieces += 1
            await stream_tool_output(text)

    def result(self) -> dict[str, Any]:
        message_text = _text(self.message.parts) if self.message is not None else ""
        if self.answered:
            return self._value(
                "completed", message_text, self.message.parts if self.message else []
            )
        state = self.state
        if state in _FAILED:
            raise A2ATaskFailed(
                self.url,
                _STATES[state],
                message_text or "(no message)",
                task_id=self.task_id,
            )
        if state == TaskState.TASK_STATE_AUTH_REQUIRED:
            raise A2AAuthFailed(self.url, f"task {self.task_id} requires authentication")
        if state not in SETTLED:  # neither a message nor a task came back
            raise A2AUnreachable(self.url, "the answer named no task and carried no message")
        parts = [p for ps in self.artifacts.values() for p in ps]
        if state == TaskState.TASK_STATE_INPUT_REQUIRED or not parts:
            return self._value(
                _STATES[state], message_text, self.message.parts if self.message else []
            )
        return self._value(_STATES[state], _text(parts), parts)

    def _value(self, state: str, text: str, parts: Any) -> dict[str, Any]:
        value: dict[str, Any] = {"text": text, "state": state}
        if self.task_id:
            value["task_id"] = self.task_id
        if self.context_id:
            value["context_id"] = self.context_id
        data = [MessageToDict(p.data) for p in parts if p.HasField("data")]
        if data:
            value["data"] = data
        if self.cut:
            value["cut"] = self.cut
        return value


def _text(parts: Any) -> str:
    return "".join(p.text for p in parts if p.HasField("text"))
