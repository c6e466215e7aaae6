"""A scripted LLM endpoint served over real HTTP, so tests run the real provider code path.

:class:`ScriptedLLMServer` listens on ``127.0.0.1`` (a free port) and answers both the OpenAI
chat completions wire (``POST /v1/chat/completions``) and the Anthropic messages wire
(``POST /v1/messages``), whole or streamed as server-sent events, from one script: each request
takes the next step. A step is a :class:`Reply` (text and/or tool calls), an :class:`HTTPError`
(a 429 with ``Retry-After``, a 500...), a :class:`Delay` before another step (to trigger
timeouts), or a callable that computes a step from the :class:`RecordedRequest`. Every request is
recorded, so a test can assert on the messages and tools that went out. A
:class:`FailSchedule` makes it flaky on a schedule besides (the first N requests, or every k-th,
fail with an error), for retries and circuit breakers.

Example::

    async with ScriptedLLMServer([Reply(tool_calls=[ScriptedToolCall(name="fs_read")]),
                                  Reply(text="done")]) as server:
        config = ProviderConfig(kind="openai", model="m", base_url=server.openai_base_url)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.abc
import msgspec
from anyio.abc import SocketAttribute

from ._http import HTTPRequest, Responder, serve_connection

__all__ = [
    "Delay",
    "FailSchedule",
    "HTTPError",
    "RecordedRequest",
    "Reply",
    "ScriptStep",
    "ScriptedLLMServer",
    "ScriptedToolCall",
]

Wire = Literal["openai", "anthropic"]
_PATHS: dict[str, Wire] = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}


class ScriptedToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call the scripted model makes.

    Attributes:
        name: the tool's *wire* name, as a model would say it (``fs_read``, not ``fs.read``).
        arguments: a JSON object, or the raw argument text (which may be malformed on purpose).
        id: the call id; ``call_<n>`` / ``toolu_<n>`` when empty.
    """

    name: str
    arguments: str | Mapping[str, Any] = msgspec.field(default_factory=dict)
    id: str = ""


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """A successful answer.

    Attributes:
        text: the answer text.
        tool_calls: the tool calls, in order.
        finish_reason: on the OpenAI wire ('' for ``tool_calls`` or ``stop`` as fits); mapped
            to Anthropic's ``stop_reason``.
        prompt_tokens: reported prompt tokens (default: the request's JSON size / 4).
        completion_tokens: reported generated tokens (default: the answer's size / 4).
        chunk_size: when streaming, text and argument strings are cut into pieces this long,
            one event each.
        model: the model name to report ('' for the one requested).
    """

    text: str = ""
    tool_calls: Sequence[ScriptedToolCall] = ()
    finish_reason: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    chunk_size: int = 4
    model: str = ""


class HTTPError(msgspec.Struct, frozen=True, kw_only=True):
    """An error answer in the wire's error format.

    Attributes:
        status: the HTTP status, e.g. 429 or 500.
        message: the error message in the body.
        retry_after: sent as the ``Retry-After`` header (seconds) when not ``None``.
        headers: more headers to send.
    """

    status: int
    message: str = "scripted error"
    retry_after: float | None = None
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)


class Delay(msgspec.Struct, frozen=True, kw_only=True):
    """Wait ``seconds`` before answering with ``then`` (a client may time out meanwhile).

    A client that closes its connection during the wait has abandoned the request: it is
    counted in :attr:`ScriptedLLMServer.abandoned` at once, and ``then`` is not sent.
    """

    seconds: float
    then: Reply | HTTPError = Reply(text="late")


class FailSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """Requests that fail whatever the script says, counted from the schedule's start.

    Request ``n`` (from 1) fails with ``error`` when ``n <= first``, or when ``every`` is set
    and ``n`` is a multiple of it; the others take the script's next step, or ``otherwise``
    once the script is used up.

    Attributes:
        error: the failure, e.g. ``HTTPError(status=500)`` or a 429 with ``retry_after``.
        first: how many requests fail from the start.
        every: every ``every``-th request fails (0: none).
        otherwise: the answer when the script has no step left.
    """

    error: HTTPError
    first: int = 0
    every: int = 0
    otherwise: Reply = Reply(text="ok")


class RecordedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request the server received.

    Attributes:
        wire: which API was called.
        path: the request path.
        headers: the request headers, names lower-cased (they include the credentials).
        body: the decoded JSON body.
    """

    wire: Wire
    path: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]

    @property
    def messages(self) -> list[Any]:
        return list(self.body.get("messages", []))

    @property
    def tools(self) -> list[Any]:
        return list(self.body.get("tools", []))

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream", False))


ScriptStep = Reply | HTTPError | Delay | Callable[[RecordedRequest], "Reply | HTTPError | Delay"]
"""One step of a script."""


def _pieces(text: str, size: int) -> list[str]:
    size = max(size, 1)
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _arguments_text(call: ScriptedToolCall) -> str:
    return call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)


class ScriptedLLMServer:
    """An OpenAI- and Anthropic-wire LLM endpoint answering from a script.

    Use as an async context manager; the port is bound and listening when ``__aenter__``
    returns. A request that finds the script used up gets a 400 (not retried by providers)
    and is counted in :attr:`unscripted`.

    Args:
        script: the steps, in the order requests will take them.
    """

    def __init__(self, script: Iterable[ScriptStep] = ()) -> None:
        self._script: deque[ScriptStep] = deque(script)
        self._ids = itertools.count(1)
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.unscripted = 0
        self.abandoned = 0
        self._changed = anyio.Event()  # set (and replaced) when a request arrives or is abandoned
        self._schedule: FailSchedule | None = None
        self._scheduled = 0
        self.failed_on_schedule = 0

    def fail_on_schedule(self, schedule: FailSchedule | None) -> None:
        """Fail requests from now on as ``schedule`` says (``None``: stop failing)."""
        self._schedule = schedule
        self._scheduled = 0

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` for the OpenAI SDK."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The ``base_url`` for the Anthropic SDK."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def remaining(self) -> int:
        """Steps not yet taken."""
        return len(self._script)

    async def wait_requests(self, count: int = 1) -> None:
        """Wait until ``count`` requests have arrived; bound it with a timeout."""
        while len(self.requests) < count:
            await self._changed.wait()

    async def wait_abandoned(self, count: int = 1) -> None:
        """Wait until ``count`` requests were abandoned by their client during a
        :class:`Delay` (its connection closed); bound it with a timeout."""
        while self.abandoned < count:
            await self._changed.wait()

    def _change(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def push(self, *steps: ScriptStep) -> None:
        """Append steps to the script."""
        self._script.extend(steps)

    async def __aenter__(self) -> ScriptedLLMServer:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(SocketAttribute.local_port)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._listener, self._task_group = listener, task_group
        task_group.start_soon(listener.serve, self._serve, task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and drop the open connections."""
        if self._task_group is None or self._listener is None:
            return
        task_group, self._task_group = self._task_group, None
        task_group.cancel_scope.cancel()
        try:
            await task_group.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await self._listener.aclose()

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        await serve_connection(stream, self._handle)

    # ------------------------------------------------------------------ one request

    async def _handle(self, http: HTTPRequest, responder: Responder) -> None:
        path = http.path.split("?", 1)[0]
        wire = _PATHS.get(path)
        if http.method != "POST" or wire is None:
            await responder.send(404, b'{"error": {"message": "not found"}}')
            return
        try:
            body = json.loads(http.body)
        except json.JSONDecodeError:
            await responder.send(400, b'{"error": {"message": "body is not JSON"}}')
            return
        recorded = RecordedRequest(wire=wire, path=path, headers=http.headers, body=body)
        self.requests.append(recorded)
        self._change()
        schedule = self._schedule
        if schedule is not None:
            self._scheduled += 1
            n = self._scheduled
            if n <= schedule.first or (schedule.every and n % schedule.every == 0):
                self.failed_on_schedule += 1
                await self._send_error(responder, wire, schedule.error)
                return
            if not self._script:
                self._script.append(schedule.otherwise)
        if not self._script:
            self.unscripted += 1
            await self._send_error(
                responder, wire, HTTPError(status=400, message="script exhausted")
            )
            return
        step = self._script.popleft()
        if not isinstance(step, Reply | HTTPError | Delay):
            step = step(recorded)
        while isinstance(step, Delay):
            if await self._abandoned_during(responder, step.seconds):
                return
            step = step.then
        if isinstance(step, HTTPError):
            await self._send_error(responder, wire, step)
        elif wire == "openai":
            await self._send_openai(responder, recorded, step)
        else:
            await self._send_anthropic(responder, recorded, step)

    async def _abandoned_during(self, responder: Responder, seconds: float) -> bool:
        """Wait ``seconds``; ``True`` (counted) if the client went away meanwhile."""
        gone = False
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal gone
                await responder.wait_disconnected()
                gone = True
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            await anyio.sleep(seconds)
            tg.cancel_scope.cancel()
        if gone:
            self.abandoned += 1
            self._change()
        return gone

    @staticmethod
    async def _send_error(responder: Responder, wire: Wire, error: HTTPError) -> None:
        headers = {"content-type": "application/json", **error.headers}
        if error.retry_after is not None:
            headers["retry-after"] = f"{error.retry_after:g}"
        if wire == "openai":
            body: dict[str, Any] = {
                "error": {"message": error.message, "type": "scripted_error", "code": None}
            }
        else:
            kind = "rate_limit_error" if error.status == 429 else "api_error"
            body = {"type": "error", "error": {"type": kind, "message": error.message}}
        await responder.send(error.status, json.dumps(body).encode(), headers=headers)

    def _usage(self, recorded: RecordedRequest, reply: Reply) -> tuple[int, int]:
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = max(1, len(json.dumps(recorded.body.get("messages", []))) // 4)
        completion = reply.completion_tokens
        if completion is None:
            size = len(reply.text) + sum(len(_arguments_text(c)) for c in reply.tool_calls)
            completion = max(1, size // 4)
        return prompt, completion

    # ------------------------------------------------------------------ OpenAI wire

    async def _send_openai(
        self, responder: Responder, recorded: RecordedRequest, reply: Reply
    ) -> None:
        n = next(self._ids)
        model = reply.model or str(recorded.body.get("model", ""))
        ids = [call.id or f"call_{n}_{i}" for i, call in enumerate(reply.tool_calls)]
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        prompt, completion = self._usage(recorded, reply)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        base = {"id": f"chatcmpl-{n}", "created": int(time.time()), "model": model}
        if not recorded.stream:
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
            if reply.tool_calls:
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": _arguments_text(call)},
                    }
                    for call_id, call in zip(ids, reply.tool_calls, strict=True)
                ]
            body = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                ],
                "usage": usage,
            }
            await responder.send(
                200, json.dumps(body).encode(), headers={"content-type": "application/json"}
            )
            return

        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
                ],
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        await responder.start_chunked(200, headers={"content-type": "text/event-stream"})
        await responder.send_chunk(event({"role": "assistant", "content": ""}))
        if reply.text:
            for piece in _pieces(reply.text, reply.chunk_size):
                await responder.send_chunk(event({"content": piece}))
        for index, (call_id, call) in enumerate(zip(ids, reply.tool_calls, strict=True)):
            head = {"index": index, "id": call_id, "type": "function"}
            await responder.send_chunk(
                event({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
            )
            for piece in _pieces(_arguments_text(call), reply.chunk_size):
                if piece:
                    delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                    await responder.send_chunk(event(delta))
        await responder.send_chunk(event({}, finish))
        options = recorded.body.get("stream_options") or {}
        if options.get("include_usage"):
            last = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            await responder.send_chunk(b"data: " + json.dumps(last).encode() + b"\n\n")
        await responder.send_chunk(b"data: [DONE]\n\n")
        await responder.end()

    # ------------------------------------------------------------------ Anthropic wire

    async def _send_anthropic(
        self, responder: Responder, recorded: RecordedRequest, reply: Reply
    ) -> None:
        n = next(self._ids)
        model = reply.model or str(recorded.body.get("model", ""))
        ids = [call.id or f"toolu_{n}_{i}" for i, call in enumerate(reply.tool_calls)]
        stop = {
            "": "tool_use" if reply.tool_calls else "end_turn",
            "stop": "end_turn",
            "length": "max_tokens",
            "tool_calls": "tool_use",
        }.get(reply.finish_reason, reply.finish_reason)
        prompt, completion = self._usage(recorded, reply)
        if not recorded.stream:
            content: list[dict[str, Any]] = []
            if reply.text:
                content.append({"type": "text", "text": reply.text})
            for call_id, call in zip(ids, reply.tool_calls, strict=True):
                # A malformed argument string cannot be an object; it goes as the string itself.
                arguments: Any = call.arguments
                if isinstance(arguments, str):
                    with contextlib.suppress(json.JSONDecodeError):
                        arguments = json.loads(arguments)
                content.append(
                    {"type": "tool_use", "id": call_id, "name": call.name, "input": arguments}
                )
            body = {
                "id": f"msg_{n}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": completion},
            }
            await responder.send(
                200, json.dumps(body).encode(), headers={"content-type": "application/json"}
            )
            return

        async def event(name: str, data: dict[str, Any]) -> None:
            payload = json.dumps({"type": name, **data}).encode()
            await responder.send_chunk(b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n")

        await responder.start_chunked(200, headers={"content-type": "text/event-stream"})
        message: dict[str, Any] = {
            "id": f"msg_{n}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1},
        }
        await event("message_start", {"message": message})
        index = 0
        if reply.text:
            await event(
                "content_block_start",
                {"index": index, "content_block": {"type": "text", "text": ""}},
            )
            for piece in _pieces(reply.text, reply.chunk_size):
                delta = {"type": "text_delta", "text": piece}
                await event("content_block_delta", {"index": index, "delta": delta})
            await event("content_block_stop", {"index": index})
            index += 1
        for call_id, call in zip(ids, reply.tool_calls, strict=True):
            block = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
            await event("content_block_start", {"index": index, "content_block": block})
            for piece in _pieces(_arguments_text(call), reply.chunk_size):
                delta = {"type": "input_json_delta", "partial_json": piece}
                await event("content_block_delta", {"index": index, "delta": delta})
            await event("content_block_stop", {"index": index})
            index += 1
        await event(
            "message_delta",
            {
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": completion},
            },
        )
        await event("message_stop", {})
        await responder.end()
