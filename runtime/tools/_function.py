"""A :class:`Tool` made from a plain function and an explicit schema."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread

from ._tool import JSONObject

__all__ = ["FunctionTool"]


class FunctionTool:
    """Wrap ``fn`` as a tool: a call runs ``fn(**arguments)``.

    Coroutine functions are awaited in the caller's task, so cancellation (a timeout) reaches
    them at their next checkpoint. Plain functions run in a worker thread; a thread cannot be
    interrupted, so on cancellation the call returns at once and the thread is left to finish
    in the background, its result discarded (``abandon_on_cancel``). Give such functions a
    short runtime or their own time limits.

    Args:
        fn: the function; it receives the validated arguments as keyword arguments.
        name: the tool's name.
        description: what it does, for the model.
        parameters_schema: JSON Schema of the arguments object; it is the contract, nothing is
            inferred from ``fn``'s signature.
        idempotent: calling it twice has the effect of calling it once, so a resilience
            policy may retry it.
    """

    __slots__ = ("_description", "_fn", "_is_async", "_name", "_schema", "idempotent")

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        description: str,
        parameters_schema: Mapping[str, Any],
        idempotent: bool = False,
    ) -> None:
        self._fn = fn
        self.idempotent = idempotent
        self._name = name
        self._description = description
        self._schema = parameters_schema
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an async __call__ counts too
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def parameters_schema(self) -> JSONObject:
        return self._schema

    async def call(self, arguments: JSONObject) -> Any:
        if self._is_async:
            return await self._fn(**arguments)
        return await anyio.to_thread.run_sync(
            functools.partial(self._fn, **arguments), abandon_on_cancel=True
        )

    def __repr__(self) -> str:
        return f"FunctionTool({self._name!r}, fn={self._fn!r})"
