"""The errors of the LLM layer, all under :class:`loom.runtime.LoomError`.

Provider errors are mapped from the SDKs' own exceptions in one place per provider and are
raised ``from None``: an SDK exception's text may quote a response body or request headers, and
nothing here may ever carry an API key. What is useful for debugging (provider, HTTP status,
the server's message with any key scrubbed) is kept as structured fields instead.

:class:`BadToolCall` and its subclasses are different: they describe a bad tool call *made by
the model*. They are not raised by ``complete()``; they ride on the
:class:`~loom.runtime.llm.ToolCall` they concern (``call.error``) so the loop can report them
back to the model and carry on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import ConfigError, DeadlineExceeded, LoomError

if TYPE_CHECKING:
    from ._router import RouteDecision

__all__ = [
    "BadResponse",
    "BadToolCall",
    "LLMConfigError",
    "LLMError",
    "MalformedToolArguments",
    "NoModelConfigured",
    "NoProviderAvailable",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimited",
    "RequestRejected",
    "UnknownModel",
    "UnknownTool",
]


class LLMError(LoomError):
    """Base of the errors of the LLM layer.

    Attributes:
        provider: the name of the provider that failed ('' when not about one provider).
    """

    def __init__(self, message: str, *, provider: str = "") -> None:
        super().__init__(f"{provider}: {message}" if provider else message)
        self.provider = provider


class RateLimited(LLMError):
    """The provider answered 429 and retries (if any) did not get through.

    Attributes:
        retry_after: seconds the provider asked us to wait, when it said so.
    """

    def __init__(self, message: str, *, provider: str = "", retry_after: float | None = None):
        super().__init__(message, provider=provider)
        self.retry_after = retry_after


class ProviderTimeout(LLMError, DeadlineExceeded):
    """The call did not finish within its timeout (``except TimeoutError`` catches it too)."""


class ProviderUnavailable(LLMError):
    """The provider could not be reached or failed on its side (connection error, 5xx).

    Attributes:
        status: the HTTP status, or ``None`` for a connection error.
    """

    def __init__(self, message: str, *, provider: str = "", status: int | None = None):
        super().__init__(message, provider=provider)
        self.status = status


class RequestRejected(LLMError):
    """The provider refused the request as such (400, 401, 403, 404, 422...); not retried.

    Attributes:
        status: the HTTP status.
    """

    def __init__(self, message: str, *, provider: str = "", status: int):
        super().__init__(message, provider=provider)
        self.status = status


class BadResponse(LLMError):
    """The provider answered, but with something that is not a usable completion."""


class LLMConfigError(LLMError, ConfigError):
    """An ``[llm.<name>]`` table or ``LOOM_LLM_*`` variable is malformed or incomplete."""


class NoModelConfigured(LLMConfigError):
    """A model was asked of a host that has none: ``CognitiveAgent(llm="server")`` on a
    runtime without a router (``AgentRuntime(llm=...)``), or ``loom.v1.LLM`` on a server
    without an ``[llm]`` table."""


class UnknownModel(LLMError, LookupError):
    """A model was asked for by a name the router does not have (``[llm.<name>]``).

    Attributes:
        model: the name asked for.
        known: the names it has, in its fallback order.
    """

    def __init__(self, model: str, known: tuple[str, ...] = ()) -> None:
        have = ", ".join(known) or "none"
        super().__init__(f"no model {model!r} (have: {have})")
        self.model = model
        self.known = known


class NoProviderAvailable(LLMError):
    """The router found no provider for a request, or every one it tried failed.

    Attributes:
        decision: the full routing record: who was rejected and why, what was tried.
    """

    def __init__(self, message: str, *, decision: RouteDecision) -> None:
        super().__init__(message)
        self.decision = decision


class BadToolCall(LLMError):
    """A tool call the model asked for that cannot be run as it stands: the model's mistake,
    found while reading its answer, before any tool is looked up or called.

    Attached to the ``ToolCall`` (``ToolCall.error``), never raised; the loop answers the call
    with it. Not to be confused with :class:`~loom.runtime.tools.ToolError`, which reports a
    call that was made and went wrong (the tool is missing, refused the arguments, timed out
    or failed).

    Attributes:
        call_id: the id of the call, to answer it with a tool message.
        tool_name: the tool's name (Loom's dotted name when known, else the model's).
    """

    def __init__(self, message: str, *, call_id: str, tool_name: str) -> None:
        super().__init__(message)
        self.call_id = call_id
        self.tool_name = tool_name


class MalformedToolArguments(BadToolCall):
    """The model's argument text is not a JSON object (it does not parse, or is a list...).

    Arguments that parse but fail the tool's schema are not this: the registry raises
    :class:`~loom.runtime.tools.InvalidToolArguments` for them when the call runs.

    Attributes:
        raw_arguments: the argument text exactly as the model produced it.
    """

    def __init__(self, message: str, *, call_id: str, tool_name: str, raw_arguments: str):
        super().__init__(message, call_id=call_id, tool_name=tool_name)
        self.raw_arguments = raw_arguments


class UnknownTool(BadToolCall):
    """The model called a tool name that was not offered in the request."""
