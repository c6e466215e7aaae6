"""The ``Tool`` seam: what every callable tool looks like to the runtime.

Native tools, agents' ``@capability`` functions, MCP servers' tools, remote agents' declared
tools and the LLM loop all meet here: the registry holds ``Tool``s, validates arguments against
``parameters_schema`` and applies timeouts, so a tool itself only does its work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["JSONObject", "Tool", "is_idempotent", "validates_itself"]

JSONObject = Mapping[str, Any]
"""A decoded JSON object (arguments, schemas)."""


@runtime_checkable
class Tool(Protocol):
    """A named, described, schema-checked async callable.

    Attributes:
        name: dotted and unique in a registry, e.g. ``fs.read`` or ``github.create_issue``.
        description: one or two sentences an LLM reads to decide when to call it.
        parameters_schema: JSON Schema of the arguments object (``{"type": "object", ...}``).
    """

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters_schema(self) -> JSONObject: ...

    async def call(self, arguments: JSONObject) -> Any:
        """Run the tool with already validated ``arguments``; return a JSON-encodable result.

        Raise a ``loom.runtime.tools.ToolError`` subclass for failures the caller should see
        by kind; anything else is reported as a failed call. Cancellation must be honoured.
        """
        ...


def validates_itself(tool: Tool) -> bool:
    """Whether ``tool`` checks its arguments as strictly as its ``parameters_schema`` says.

    A tool may declare ``validates_arguments = True`` when its ``call`` refuses, with
    ``InvalidToolArguments``, every arguments object the schema refuses (an ``@capability`` does:
    its schema and its strict msgspec conversion come from the same type hints). The registry
    then skips its own JSON Schema pass, which costs more than the rest of a call; it still
    parses the JSON and checks that the arguments are an object.
    """
    return getattr(tool, "validates_arguments", False) is True


def is_idempotent(tool: Tool) -> bool:
    """Whether ``tool`` declares its calls idempotent (``idempotent = True``): making one twice
    has the effect of making it once, so a resilience policy may retry it. Reads of any kind
    are; a tool that sends an email is not (give its calls an idempotency key instead). An MCP
    tool is when its server marks it ``idempotentHint`` or ``readOnlyHint``; the registration
    may say otherwise (``ToolRegistry.register(idempotent=...)``).
    """
    return getattr(tool, "idempotent", False) is True
