"""A remote A2A agent as a Loom :class:`~loom.runtime.tools.Tool`, on the official ``a2a-sdk``.

It lives in the SDK, not in ``loom.runtime.tools`` beside the MCP tools, because importing any
module of ``a2a.client`` runs ``a2a/client/__init__.py``, whose ``client_factory`` imports the
SDK's gRPC transport, and with it ``grpc``, whenever grpcio is installed (always, for Loom);
the runtime never imports grpc (``docs/architecture.md``).

One tool per remote agent, not one per skill: an A2A agent is addressed as a whole (a message
goes to the agent, which picks its skill itself), so one tool whose description lists the
skills tells the model what it can ask without making it choose between tools that would all
send the same message to the same place.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
import msgspec
from a2a.client import A2ACardResolver, Client, ClientCallContext, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError, A2AClientTimeoutError, AgentCardResolutionError
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
)
from a2a.utils.errors import A2AError as SdkA2AError
from opentelemetry.trace import get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from loom.runtime import InvalidArgument
from loom.runtime.tools import JSONObject, ToolError

from ._a2a_errors import A2AAuthFailed, A2ABadCard, A2ATaskFailed, A2AUnreachable
from ._a2a_run import SETTLED, Run

__all__ = ["A2AAgentTool", "A2AToolStats"]

log = logging.getLogger("loom.a2a")

_PARAMETERS: JSONObject = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "description": "What to ask the agent, in words."},
        "context_id": {
            "type": "string",
            "description": "To continue an earlier conversation with this agent: the "
            "context_id of one of its earlier answers.",
        },
        "task_id": {
            "type": "string",
            "description": "To answer a question the agent asked (state input-required): "
            "the task_id of that answer.",
        },
    },
    "required": ["message"],
    "additionalProperties": False,
}

_MAX_DESCRIPTION = 2000
_W3C = TraceContextTextMapPropagator()


class A2AToolStats(msgspec.Struct, frozen=True, kw_only=True):
    """What an :class:`A2AAgentTool` has done since it was made (its calls' outcomes, by
    kind, are the registry's ``ToolStats``).

    Attributes:
        calls: calls started.
        pieces: pieces of partial output handed to callers' sinks.
        polls: ``tasks/get`` sent while following a task.
        remote_cancels: ``tasks/cancel`` sent for a cancelled or failed call.
        remote_cancel_failures: those that failed or outlasted ``cancel_grace_s``.
        cut_bytes: bytes of result parts dropped beyond ``max_result_bytes``.
    """

    calls: int = 0
    pieces: int = 0
    polls: int = 0
    remote_cancels: int = 0
    remote_cancel_failures: int = 0
    cut_bytes: int = 0


class A2AAgentTool:
    """A remote A2A agent, called as one tool: ``{"message": ..., "context_id"?, "task_id"?}``.

    Entering it (``async with A2AAgentTool(url) as tool``) fetches the agent card from
    ``<url>/.well-known/agent-card.json``; its name, description and skills become the tool's
    description. Each :meth:`call` sends the message with ``message/stream`` when the card
    says the agent streams (its status and artifact texts go to the caller as partial output,
    :func:`~loom.runtime.tools.stream_tool_output`), else with ``message/send`` returning at
    once and ``tasks/get`` until the task settles. It returns a JSON object: ``text`` (the
    artifacts' text, else the agent's last message), ``state`` (``completed``, or
    ``input-required`` when the agent asks a question: answer with its ``task_id``),
    ``task_id``, ``context_id`` (pass it back to continue the conversation) and, when the agent
    sent structured parts, ``data``.

    A stream that ends before the task settles is followed with ``tasks/get``. A call
    cancelled by its caller or its timeout sends ``tasks/cancel`` for the remote task
    (shielded, within ``cancel_grace_s``) before the cancellation goes on, so the remote
    executor stops too; a call cancelled before the agent named its task (the first event of
    the stream, or ``message/send``'s answer) cannot cancel anything remote.

    Args:
        url: the agent's base URL (where its card is served).
        name: the tool's name (default ``a2a.<card name>``, made of letters, digits, ``_``).
        token: a bearer token sent with every request (card included).
        headers: other HTTP headers sent with every request.
        connect_timeout_s: seconds to connect, send a request, or fetch the card. The wait for
            the answer is bounded by the call's timeout (the registry's), not here.
        cancel_grace_s: seconds ``tasks/cancel`` may take after a cancelled call.
        poll_interval_s: the longest pause between two ``tasks/get`` of an agent that does
            not stream (it starts at a tenth of that and doubles).
        max_result_bytes: the most a call keeps of the agent's result parts (their protobuf
            size); parts beyond it are dropped and the result says ``"cut": <bytes>``. What
            was streamed to the caller meanwhile is not cut.

    Raises (from entering):
        A2AUnreachable: the card could not be fetched (no answer, a server error).
        A2AAuthFailed: the server refused the credentials (401, 403).
        A2ABadCard: the card is not JSON, not an agent card, or names no JSON-RPC transport.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout_s: float = 10.0,
        cancel_grace_s: float = 5.0,
        poll_interval_s: float = 1.0,
        max_result_bytes: int = 1_000_000,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidArgument(f"an A2A agent's URL is http:// or https://, not {url!r}")
        for what, value in (
            ("connect_timeout_s", connect_timeout_s),
            ("cancel_grace_s", cancel_grace_s),
            ("poll_interval_s", poll_interval_s),
            ("max_result_bytes", max_result_bytes),
        ):
            if not value > 0:
                raise InvalidArgument(f"{what} must be > 0, not {value!r}")
        self.url = url.rstrip("/")
        self._name = name
        self._headers = dict(headers or {})
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._connect_timeout_s = connect_timeout_s
        self._cancel_grace_s = cancel_grace_s
        self._poll_interval_s = poll_interval_s
        self._max_result_bytes = max_result_bytes
        self._calls = self._pieces = self._polls = self._cut = 0
        self._remote_cancels = self._remote_cancel_failures = 0
        self._http: httpx.AsyncClient | None = None
        self._client: Client | None = None
        self._card: AgentCard | None = None

    # ------------------------------------------------------------------ the Tool seam

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = f"a2a.{_slug(self.card.name)}"
        return self._name

    @property
    def description(self) -> str:
        card = self.card
        lines = [f"Ask the remote agent {card.name!r} (A2A, {self.url})."]
        if card.description:
            lines.append(card.description)
        if card.skills:
            lines.append("Its skills:")
        for skill in card.skills:
            line = f"- {skill.name or skill.id}: {skill.description}".rstrip(": ")
            if skill.examples:
                line += f" (e.g. {skill.examples[0]!r})"
            lines.append(line)
        text = "\n".join(lines)
        return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 3] + "..."

    @property
    def parameters_schema(self) -> JSONObject:
        return _PARAMETERS

    @property
    def card(self) -> AgentCard:
        """The agent card, as fetched when the tool was entered."""
        if self._card is None:
            raise InvalidArgument(f"A2AAgentTool({self.url!r}) is not open: use `async with`")
        return self._card

    @property
    def streaming(self) -> bool:
        """Whether calls use ``message/stream`` (the card says the agent streams)."""
        return bool(self.card.capabilities.streaming)

    def statistics(self) -> A2AToolStats:
        """What the tool has done so far."""
        return A2AToolStats(
            calls=self._calls,
            pieces=self._pieces,
            polls=self._polls,
            remote_cancels=self._remote_cancels,
            remote_cancel_failures=self._remote_cancel_failures,
            cut_bytes=self._cut,
        )

    # ------------------------------------------------------------------ life

    async def __aenter__(self) -> Self:
        timeout = httpx.Timeout(self._connect_timeout_s, read=None)
        http = httpx.AsyncClient(headers=self._headers, timeout=timeout)
        try:
            card = None
            with anyio.move_on_after(self._connect_timeout_s):
                card = await self._fetch_card(http)
            if card is None:
                raise A2AUnreachable(
                    self.url, f"no agent card within {self._connect_timeout_s:g} s"
                )
            if not any(i.protocol_binding == "JSONRPC" for i in card.supported_interfaces):
                bindings = sorted({i.protocol_binding for i in card.supported_interfaces})
                raise A2ABadCard(self.url, f"no JSONRPC interface (it offers {bindings or 'none'})")
            config = ClientConfig(
                streaming=bool(card.capabilities.streaming),
                polling=not card.capabilities.streaming,
                httpx_client=http,
            )
            try:
                client = ClientFactory(config).create(card)
            except ValueError as exc:
                raise A2ABadCard(self.url, str(exc)) from exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await http.aclose()
            raise
        self._http, self._client, self._card = http, client, card
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections; calls in flight fail. Idempotent."""
        http, self._http, self._client = self._http, None, None
        if http is not None:
            with anyio.CancelScope(shield=True):
                await http.aclose()

    async def _fetch_card(self, http: httpx.AsyncClient) -> AgentCard:
        try:
            return await A2ACardResolver(http, self.url).get_agent_card()
        except AgentCardResolutionError as exc:
            cause = exc.__cause__
            if isinstance(cause, httpx.RequestError):
                raise A2AUnreachable(self.url, _request_error(cause)) from exc
            if exc.status_code in (401, 403):
                raise A2AAuthFailed(self.url, f"HTTP {exc.status_code}") from exc
            if exc.status_code is not None and exc.status_code >= 500:
                raise A2AUnreachable(self.url, f"HTTP {exc.status_code}") from exc
            raise A2ABadCard(self.url, _short(exc.message)) from exc

    # ------------------------------------------------------------------ calls

    async def call(self, arguments: JSONObject) -> Any:
        client = self._client
        if client is None:
            raise A2AUnreachable(self.url, "the tool is closed", tool=self._name)
        message = Message(
            role=Role.ROLE_USER,
            message_id=uuid.uuid4().hex,
            parts=[Part(text=str(arguments["message"]))],
            context_id=str(arguments.get("context_id", "")),
            task_id=str(arguments.get("task_id", "")),
        )
        self._calls += 1
        run = Run(self.url, self._max_result_bytes)
        try:
            try:
                events = client.send_message(
                    SendMessageRequest(message=message), context=_trace_context()
                )
                try:
                    await run.follow(events, stream=self.streaming)
                    self._pieces += run.pieces
                finally:
                    # The SDK's iterator is an async generator: close its HTTP stream now.
                    close = getattr(events, "aclose", None)
                    if close is not None:
                        await close()
                # Without streaming the answer is the task as submitted; a stream that ended
                # early (the server going away mid-answer) leaves it running. Either way the
                # task is followed with tasks/get until it settles.
                await self._poll(client, run)
            except BaseException:
                # Cancelled (the caller, or the registry's timeout) or failed while the remote
                # task still runs: tell the remote side, so it stops working for nobody.
                if run.task_id and run.state not in SETTLED:
                    await self._cancel_remote(client, run.task_id)
                raise
        except (SdkA2AError, httpx.HTTPError) as exc:
            raise self._error(exc, run) from exc
        finally:
            self._cut += run.cut
        return run.result()

    async def _poll(self, client: Client, run: Run) -> None:
        pause = self._poll_interval_s / 10
        while run.task_id and not run.answered and run.state not in SETTLED:
            await anyio.sleep(pause)
            pause = min(pause * 2, self._poll_interval_s)
            self._polls += 1
            run.take_task(await client.get_task(GetTaskRequest(id=run.task_id)))

    async def _cancel_remote(self, client: Client, task_id: str) -> None:
        self._remote_cancels += 1
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._cancel_grace_s) as grace:
            try:
                await client.cancel_task(CancelTaskRequest(id=task_id))
                log.debug("cancelled remote task %s of %s", task_id, self.url)
                return
            except (SdkA2AError, httpx.HTTPError) as exc:  # best effort: the call is over
                log.warning("tasks/cancel of %s at %s failed: %r", task_id, self.url, exc)
        if grace.cancelled_caught:
            log.warning(
                "tasks/cancel of %s at %s took over %g s", task_id, self.url, self._cancel_grace_s
            )
        self._remote_cancel_failures += 1

    def _error(self, exc: SdkA2AError | httpx.HTTPError, run: Run) -> ToolError:
        cause = exc.__cause__ if isinstance(exc, A2AClientError) else exc
        if isinstance(cause, httpx.HTTPStatusError):
            status = cause.response.status_code
            if status in (401, 403):
                return A2AAuthFailed(self.url, f"HTTP {status}")
            return A2AUnreachable(self.url, f"HTTP {status}")
        if isinstance(cause, httpx.HTTPError):
            return A2AUnreachable(self.url, _request_error(cause))
        if isinstance(exc, A2AClientTimeoutError):
            return A2AUnreachable(self.url, "timed out")
        if isinstance(exc, A2AClientError):
            return A2AUnreachable(self.url, _short(str(exc)))
        return A2ATaskFailed(self.url, "error", _short(str(exc)), task_id=run.task_id)

    def __repr__(self) -> str:
        return f"A2AAgentTool({self.url!r})"


def _trace_context() -> ClientCallContext | None:
    """The call's HTTP headers: the current span's W3C ``traceparent`` (the runtime's
    ``call_tool`` span, when tracing is on), so an A2A server that traces continues the trace."""
    if not get_current_span().get_span_context().is_valid:
        return None
    headers: dict[str, str] = {}
    _W3C.inject(headers)
    return ClientCallContext(service_parameters=headers)


def _slug(name: str) -> str:
    slug = "".join(c if c.isalnum() else "_" for c in name.strip().lower()).strip("_")
    return slug or "agent"


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _request_error(exc: httpx.HTTPError) -> str:
    return _short(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
