"""The tool registry: one place that validates, times out, limits and accounts for tool calls.

Every tool call in Loom goes through :meth:`ToolRegistry.call`, whoever made the tool (native
tools, agents' capabilities, MCP servers, remote agents) and whoever calls it (the LLM loop,
the gRPC bridge). A tool therefore only does its work; the registry guarantees:

* arguments are a bounded JSON object that passes the tool's schema before the tool runs,
  checked within the call's timeout: a millisecond at most on the event loop, the rest in a
  worker thread (a schema's patterns in RE2);
* the call ends within its timeout, by cancelling the tool;
* no more than the tool's concurrency limit run at once; the rest wait, in FIFO order;
* every failure leaves as a :class:`ToolError` of a known kind, and cancellation from outside
  propagates unwrapped;
* the tool's resilience policy, if it has one (``loom.runtime.resilience``), guards the run:
  the one given at registration, else the first of the registry's ``policies`` rules matching
  the name (see :mod:`._guard`).
"""

from __future__ import annotations

import builtins
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import anyio
import anyio.to_thread
import jsonschema
import jsonschema.exceptions
import jsonschema.validators
import msgspec
import referencing
import referencing.exceptions
import referencing.jsonschema
from anyio.lowlevel import RunVar
from opentelemetry.metrics import Histogram

from .._errors import InvalidArgument
from ..resilience import Policy, PolicyRules, current_idempotency_key
from ..resilience import idempotency_key as with_key  # the parameter has its name
from ._call_scope import enter_tool_body, reset_frame
from ._errors import (
    InvalidToolArguments,
    InvalidToolSchema,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolPermissionDenied,
    ToolTimeout,
)
from ._guard import guarded
from ._stats import ToolFailures, ToolSpec, ToolStats
from ._tool import Tool, is_idempotent, validates_itself
from ._validator import (
    Budget,
    OutOfBudget,
    check_budget,
    pattern_refusal,
    schema_format_checker,
    validator_class,
)
from ._validator import shown as _shown

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_ARGUMENT_BYTES",
    "MAX_ARGUMENT_DEPTH",
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_DEPTH",
    "RegistryStats",
    "ToolArguments",
    "ToolRegistry",
]

DEFAULT_TIMEOUT: Final = 30.0
"""Seconds a call may take unless its tool or the call itself says otherwise."""

MAX_SCHEMA_BYTES: Final = 64 * 1024
"""The largest ``parameters_schema`` registered, in bytes of its compact JSON encoding."""

MAX_SCHEMA_DEPTH: Final = 32
"""The deepest nesting of objects and arrays in a ``parameters_schema`` (``{}`` is 1)."""

MAX_ARGUMENT_DEPTH: Final = 64
"""The deepest nesting of objects and arrays in a call's arguments (``{}`` is 1)."""

MAX_ARGUMENT_BYTES: Final = 1024 * 1024
"""The largest arguments of a call, in bytes of their (UTF-8) JSON text; decoded arguments are
measured as compact JSON."""

# Validations running in worker threads at once, over all registries: past it calls wait (within
# their timeout) rather than take every thread anyio lends (fs tools and others need them too).
_VALIDATION_THREADS: Final = 8

# Validation first runs on the event loop for this long, when the arguments are at most
# _INLINE_BYTES of text: nearly every call ends there, without the worker thread's round trip
# (tens to hundreds of microseconds, more than the rest of a small call). Past it, the work is
# thrown away and done again in a thread; validation has no side effects.
_INLINE_SECONDS: Final = 0.001
_INLINE_BYTES: Final = 16 * 1024

# The reference keywords of every draft jsonschema knows; only '#...' values are allowed.
_REFERENCE_KEYWORDS: Final = ("$ref", "$dynamicRef", "$recursiveRef")

# Letters, digits, '_', '-' and '.' as a namespace separator; what MCP allows, and short
# enough for every model API once the LLM layer maps the dots.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")

ToolArguments = Mapping[str, Any] | str | bytes
"""What :meth:`ToolRegistry.call` accepts: a decoded object or its JSON text."""


class RegistryStats(msgspec.Struct, frozen=True, kw_only=True):
    """A registry's counters.

    Attributes:
        tools: each registered tool's counters, by name (a read-only mapping).
        not_found: calls to names that were not registered.
    """

    tools: Mapping[str, ToolStats]
    not_found: int


class _Counters:
    __slots__ = (
        "calls",
        "cancelled",
        "failed",
        "in_flight",
        "invalid_arguments",
        "permission_denied",
        "succeeded",
        "timeouts",
        "waiting",
    )

    def __init__(self) -> None:
        self.calls = self.succeeded = self.cancelled = self.waiting = self.in_flight = 0
        self.invalid_arguments = self.timeouts = self.permission_denied = self.failed = 0

    def count_failure(self, exc: ToolError) -> None:
        if isinstance(exc, InvalidToolArguments):
            self.invalid_arguments += 1
        elif isinstance(exc, ToolTimeout):
            self.timeouts += 1
        elif isinstance(exc, ToolPermissionDenied):
            self.permission_denied += 1
        else:
            self.failed += 1


class _Entry:
    __slots__ = (
        "counters",
        "idempotent",
        "limiter",
        "name",
        "policy",
        "schema",
        "self_checked",
        "timeout",
        "tool",
        "validator",
    )

    def __init__(
        self, tool: Tool, schema: dict[str, Any], timeout: float, max_concurrency: int | None
    ) -> None:
        self.tool = tool
        self.policy: Policy | None = None
        self.idempotent = is_idempotent(tool)
        self.name = tool.name
        self.schema = schema
        self.timeout = timeout
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            # Patterns are checked as RE2 compiles them, the engine that will match them.
            # (The stubs' protocol omits check_schema's format_checker, there since 4.0.)
            cls.check_schema(schema, format_checker=schema_format_checker(cls))  # type: ignore[call-arg]
        except jsonschema.exceptions.SchemaError as exc:
            message = exc.message
            if exc.validator == "format" and isinstance(exc.instance, str):
                message = pattern_refusal(exc.instance) or message
            where = "/".join(str(p) for p in exc.absolute_path)
            raise InvalidToolSchema(
                f"{message} (at '{where}')" if where else message, tool=self.name
            ) from exc
        _check_references(cls, schema, self.name)
        # jsonschema's default registry fetches any URI a reference names (http, file): a
        # schema sent by a client would make the server read its files or hang on a URL.
        self.validator = validator_class(cls)(schema, registry=_NO_RETRIEVAL)
        self.self_checked = validates_itself(tool)
        self.limiter = None if max_concurrency is None else anyio.CapacityLimiter(max_concurrency)
        self.counters = _Counters()

    def validate(self, arguments: ToolArguments) -> dict[str, Any]:
        """The checked arguments object; run in a worker thread under a :class:`Budget`."""
        if isinstance(arguments, str | bytes):
            size = _text_bytes(arguments)
            if size > MAX_ARGUMENT_BYTES:
                raise InvalidToolArguments(_too_large(size), tool=self.name)
            try:
                value = msgspec.json.decode(arguments)
            except msgspec.DecodeError as exc:
                raise InvalidToolArguments(f"not valid JSON: {exc}", tool=self.name) from None
            except RecursionError:
                # msgspec stops at its own nesting limit, well before the interpreter's stack.
                raise InvalidToolArguments(_too_deep(MAX_ARGUMENT_DEPTH), tool=self.name) from None
        elif isinstance(arguments, Mapping):
            value = dict(arguments)
        else:
            raise InvalidToolArguments(
                f"expected a JSON object, got {type(arguments).__name__}", tool=self.name
            )
        # Before anything recursive (jsonschema, the tool) walks them; decoded and mapping
        # arguments alike, so every caller meets the same bound. Text with no more opening
        # brackets than the bound cannot nest deeper (counted in C, so most calls skip the walk).
        if _may_nest_deeper(arguments) and _depth(value, MAX_ARGUMENT_DEPTH) > MAX_ARGUMENT_DEPTH:
            raise InvalidToolArguments(_too_deep(MAX_ARGUMENT_DEPTH), tool=self.name)
        if not isinstance(value, dict):
            raise InvalidToolArguments(
                f"expected a JSON object, got {_json_type(value)}", tool=self.name
            )
        if not isinstance(arguments, str | bytes):
            size = _encoded_bytes(value)
            if size > MAX_ARGUMENT_BYTES:
                raise InvalidToolArguments(_too_large(size), tool=self.name)
        if self.self_checked:
            return value  # the tool's own check is as strict as the schema (and faster)
        try:
            error = jsonschema.exceptions.best_match(self.validator.iter_errors(value))
        except referencing.exceptions.Unresolvable as exc:
            # Unreachable after _check_references; a safety net that keeps the refusal typed.
            raise InvalidToolSchema(
                f"a reference does not resolve within the schema: {exc}", tool=self.name
            ) from None
        except RecursionError:
            # References that lead back to where they started without descending into the
            # arguments ({"$ref": "#"}): the schema's fault, found only when it is applied.
            raise InvalidToolSchema(
                "its references loop without end when applied", tool=self.name
            ) from None
        if error is not None:
            raise InvalidToolArguments(
                error.message, path=tuple(error.absolute_path), tool=self.name
            )
        return value

    def stats(self) -> ToolStats:
        c = self.counters
        return ToolStats(
            name=self.name,
            calls=c.calls,
            succeeded=c.succeeded,
            failures=ToolFailures(
                invalid_arguments=c.invalid_arguments,
                timeouts=c.timeouts,
                permission_denied=c.permission_denied,
                failed=c.failed,
            ),
            cancelled=c.cancelled,
            waiting=c.waiting,
            in_flight=c.in_flight,
            max_concurrency=None if self.limiter is None else int(self.limiter.total_tokens),
            timeout=self.timeout,
        )


def _outcome(exc: ToolError) -> str:
    """The ``outcome`` label of a failed call: its kind, as ``ToolFailures`` counts it."""
    if isinstance(exc, InvalidToolArguments):
        return "invalid_arguments"
    if isinstance(exc, ToolTimeout):
        return "timeout"
    if isinstance(exc, ToolPermissionDenied):
        return "permission_denied"
    return "failed"


def _time(duration: Histogram, start: float, tool: str, outcome: str) -> None:
    duration.record(anyio.current_time() - start, {"tool": tool, "outcome": outcome})


class ToolRegistry:
    """The tools an agent (or a whole runtime) can call, by name.

    Registration is synchronous and takes effect at once; calls already running keep the tool
    they started with when it is unregistered or replaced.

    Args:
        default_timeout: seconds a call may take unless the tool's registration or the call
            says otherwise; ``math.inf`` for none.
    """

    def __init__(self, *, default_timeout: float = DEFAULT_TIMEOUT) -> None:
        self._default_timeout = _check_timeout(default_timeout)
        self._entries: dict[str, _Entry] = {}
        self._not_found = 0
        # Where each call's duration goes, by tool and outcome (``loom.tool.duration``): set
        # by the runtime that owns a meter (AgentRuntime(meter_provider=...)); None: not timed.
        self.duration: Histogram | None = None
        # Which resilience policy guards which tool name, for tools registered without one
        # (``[tools.policy]``): shared by the runtime with every registry it routes calls to.
        self.policies: PolicyRules | None = None

    def register(
        self,
        tool: Tool,
        *,
        timeout: float | None = None,
        max_concurrency: int | None = None,
        replace: bool = False,
        policy: Policy | None = None,
        idempotent: bool | None = None,
    ) -> None:
        """Add ``tool`` under its name.

        The schema is checked and compiled once, here.

        Args:
            tool: the tool.
            timeout: this tool's default timeout in seconds (``None``: the registry's;
                ``math.inf``: none).
            max_concurrency: how many calls may run in the tool at once (``None``: no limit).
                Calls over the limit wait for a slot, first come first served, and the wait
                counts against their timeout.
            replace: replace a tool already registered under the name instead of refusing.
            policy: the resilience policy guarding its calls (``None``: the registry's
                ``policies`` rules decide).
            idempotent: whether a call may be made twice with the same effect, so the policy
                may retry it (``None``: the tool's own ``idempotent`` attribute, else no).

        Raises:
            InvalidToolSchema: the schema is not a valid JSON Schema of an object.
            InvalidArgument: the name is malformed or taken, or a limit is out of range.
        """
        name = tool.name
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidArgument(
                f"invalid tool name {name!r}: use 1-128 letters, digits, '_', '-' or '.'"
            )
        if name in self._entries and not replace:
            raise InvalidArgument(f"a tool named {name!r} is already registered")
        if max_concurrency is not None and max_concurrency < 1:
            raise InvalidArgument(f"max_concurrency must be at least 1, not {max_concurrency}")
        limit = self._default_timeout if timeout is None else _check_timeout(timeout)
        entry = _Entry(tool, _schema_of(tool), limit, max_concurrency)
        entry.policy = policy
        if idempotent is not None:
            entry.idempotent = idempotent
        self._entries[name] = entry

    def unregister(self, name: str) -> Tool:
        """Remove the tool called ``name`` and return it; running calls finish undisturbed.

        Raises:
            ToolNotFound: no tool has that name.
        """
        try:
            return self._entries.pop(name).tool
        except KeyError:
            raise ToolNotFound(name) from None

    def get(self, name: str) -> Tool:
        """The tool called ``name``.

        Raises:
            ToolNotFound: no tool has that name.
        """
        try:
            return self._entries[name].tool
        except KeyError:
            raise ToolNotFound(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def list(self) -> builtins.list[Tool]:
        """The registered tools, in registration order."""
        return [entry.tool for entry in self._entries.values()]

    def specs(self) -> builtins.list[ToolSpec]:
        """What to tell a model about every registered tool, in registration order."""
        return [
            ToolSpec(name=e.name, description=e.tool.description, parameters_schema=e.schema)
            for e in self._entries.values()
        ]

    async def call(
        self,
        name: str,
        arguments: ToolArguments,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        guard: bool = True,
    ) -> Any:
        """Validate ``arguments`` and run the tool called ``name`` on them.

        The timeout covers waiting for a concurrency slot and the tool's run. When it expires
        the tool is cancelled (it must honour cancellation; a tool that swallows it delays the
        timeout) and :class:`ToolTimeout` is raised. Cancelling the caller cancels the tool
        and propagates the cancellation unwrapped.

        Args:
            name: the tool's registered name.
            arguments: the arguments object, decoded or as JSON text.
            timeout: seconds for this call (``None``: the tool's default; ``math.inf``: none).
                It bounds the whole call, every attempt and backoff of its policy included.
            idempotency_key: makes the call retryable by its policy; the tool receives it
                (``loom.runtime.resilience.current_idempotency_key()``, an MCP server as
                ``_meta.idempotencyKey``) and should do its effect once per key.
            guard: apply the ``policies`` rules (the runtime passes ``False`` for a call
                another node already guarded); a policy given at registration always applies.

        Returns:
            What the tool returned.

        Raises:
            ToolNotFound: no tool has that name.
            InvalidToolArguments: not JSON, not an object, nested deeper than
                :data:`MAX_ARGUMENT_DEPTH`, larger than :data:`MAX_ARGUMENT_BYTES`, or failing
                the schema (or refused as invalid by the tool).
            InvalidToolSchema: the schema's references loop without end when applied.
            ToolTimeout: the timeout expired (while validating or in the tool).
            InvalidArgument: ``timeout`` is not positive (a caller's error, not counted).
            ToolPermissionDenied: the tool refused by policy.
            ToolFailed: the tool raised anything else (chained as ``__cause__``).
        """
        entry = self._entries.get(name)
        if entry is None:
            self._not_found += 1
            raise ToolNotFound(name)
        limit = entry.timeout if timeout is None else _check_timeout(timeout)
        counters = entry.counters
        counters.calls += 1
        duration = self.duration
        start = anyio.current_time() if duration is not None else 0.0
        try:
            if idempotency_key is None and current_idempotency_key() is not None:
                # A call made without a key inside a keyed one is a call of its own: the
                # outer key must not reach this tool (nor travel on with it).
                with with_key(None):
                    result = await self._call(entry, arguments, limit, None, guard)
            else:
                result = await self._call(entry, arguments, limit, idempotency_key, guard)
        except ToolError as exc:
            if exc.tool is None:
                exc.tool = entry.name
            counters.count_failure(exc)
            if duration is not None:
                _time(duration, start, entry.name, _outcome(exc))
            raise
        except BaseException:
            counters.cancelled += 1
            if duration is not None:
                _time(duration, start, entry.name, "cancelled")
            raise
        counters.succeeded += 1
        if duration is not None:
            _time(duration, start, entry.name, "ok")
        return result

    def statistics(self) -> RegistryStats:
        """A snapshot of every tool's counters."""
        return RegistryStats(
            tools=MappingProxyType({name: e.stats() for name, e in self._entries.items()}),
            not_found=self._not_found,
        )

    async def _call(
        self,
        entry: _Entry,
        arguments: ToolArguments,
        limit: float,
        key: str | None,
        guard: bool,
    ) -> Any:
        with anyio.CancelScope(deadline=anyio.current_time() + limit) as scope:
            checked = await _validated(entry, arguments, scope.deadline, limit)
            if checked is None:
                raise ToolTimeout(limit, tool=entry.name)
            policy = entry.policy
            if policy is None and guard and self.policies:
                policy = self.policies.match(entry.name)
            if policy is not None or key is not None:
                try:
                    return await guarded(policy, self._run, entry, checked, key)
                except ToolFailed as exc:
                    # A tool that turns our cancellation into an error of its own (made a
                    # ToolFailed in the guard, so its policy can read it) still timed out.
                    if scope.cancel_called:
                        raise ToolTimeout(limit, tool=entry.name) from exc
                    raise
            try:
                return await self._run(entry, checked)
            except ToolError:
                raise
            except Exception as exc:
                # A tool that turns our cancellation into an error of its own still timed out.
                if scope.cancel_called:
                    raise ToolTimeout(limit, tool=entry.name) from exc
                raise ToolFailed.from_exception(exc, tool=entry.name) from exc
        # Reached only when the deadline cancelled the tool.
        raise ToolTimeout(limit, tool=entry.name)

    async def _run(self, entry: _Entry, arguments: dict[str, Any]) -> Any:
        # The call is counted against its turn's caps (when it has any); the calls its body
        # makes are not that call, and count on their own.
        token = enter_tool_body(entry.tool)
        if token is None:
            return await self._run_body(entry, arguments)
        try:
            return await self._run_body(entry, arguments)
        finally:
            reset_frame(token)

    async def _run_body(self, entry: _Entry, arguments: dict[str, Any]) -> Any:
        counters = entry.counters
        if entry.limiter is None:
            counters.in_flight += 1
            try:
                return await entry.tool.call(arguments)
            finally:
                counters.in_flight -= 1
        # A fresh borrower per call: the same task may hold several slots (a tool calling
        # itself through the registry), which per-task borrowing would refuse.
        borrower = object()
        counters.waiting += 1
        try:
            await entry.limiter.acquire_on_behalf_of(borrower)
        finally:
            counters.waiting -= 1
        counters.in_flight += 1
        try:
            return await entry.tool.call(arguments)
        finally:
            counters.in_flight -= 1
            entry.limiter.release_on_behalf_of(borrower)


# Shared by every registry of an event loop (a limiter belongs to the loop that made it).
_validation_threads: Final[RunVar[anyio.CapacityLimiter]] = RunVar("_validation_threads")


async def _validated(
    entry: _Entry, arguments: ToolArguments, deadline: float, remaining: float
) -> dict[str, Any] | None:
    """``entry.validate(arguments)``, or ``None`` when the ``deadline`` (loop clock) passed.

    ``remaining`` is the time left until ``deadline`` (the caller just set it). Small arguments
    get a millisecond on the event loop; anything longer runs in a worker thread, so a large
    argument or a slow schema keeps one thread busy, never the loop. Cancelling the caller (its
    deadline included) returns at once; the thread left behind stops at its next keyword, since
    its budget is abandoned.
    """
    if (
        entry.self_checked
        and isinstance(arguments, str | bytes)
        and len(arguments) <= _INLINE_BYTES
        and not _may_nest_deeper(arguments)
    ):
        # No schema is applied (the tool checks its arguments itself, decided once when it
        # was registered) and the text is small and too shallow for the depth walk: all that
        # runs is msgspec's decoding of at most _INLINE_BYTES, in C, in time linear in them.
        # Nothing to stop half-way, so no budget to set up (most calls over the bridge).
        return entry.validate(arguments)
    if isinstance(arguments, Mapping) or len(arguments) <= _INLINE_BYTES:
        try:
            return Budget(min(remaining, _INLINE_SECONDS)).run(entry.validate, arguments)
        except OutOfBudget:
            if remaining <= _INLINE_SECONDS:
                return None
    try:
        limiter = _validation_threads.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(_VALIDATION_THREADS)
        _validation_threads.set(limiter)
    budget = Budget(deadline - anyio.current_time())
    try:
        return await anyio.to_thread.run_sync(
            budget.run,
            entry.validate,
            arguments,
            abandon_on_cancel=True,
            limiter=limiter,
        )
    except OutOfBudget:
        return None
    finally:
        budget.abandoned = True


def _text_bytes(text: str | bytes) -> int:
    if isinstance(text, bytes):
        return len(text)
    # UTF-8 takes at most 4 bytes a character; encode only when that could pass the bound.
    return len(text) if len(text) * 4 <= MAX_ARGUMENT_BYTES else len(text.encode(errors="replace"))


def _encoded_bytes(value: dict[str, Any]) -> int:
    # Decoded arguments (an in-process caller's) measured as the JSON a remote caller would
    # send; values JSON cannot hold count as null.
    return len(msgspec.json.encode(value, enc_hook=lambda _: None))


def _too_large(size: int) -> str:
    return f"{size} bytes of JSON, more than the {MAX_ARGUMENT_BYTES} allowed"


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidArgument(f"timeout must be positive seconds or math.inf, not {timeout!r}")
    return float(timeout) if not math.isinf(timeout) else math.inf


def _schema_of(tool: Tool) -> dict[str, Any]:
    # Typed as a mapping, but tools also come from remote peers and MCP servers.
    schema: object = tool.parameters_schema
    if not isinstance(schema, Mapping):
        kind = type(schema).__name__
        raise InvalidToolSchema(f"expected a JSON object, got {kind}", tool=tool.name)
    try:
        # A deep copy that also proves the schema is plain JSON.
        encoded = msgspec.json.encode(schema)
    except (msgspec.EncodeError, TypeError) as exc:
        raise InvalidToolSchema(f"not JSON-encodable: {exc}", tool=tool.name) from None
    except RecursionError:
        # msgspec stops at its own nesting limit, well before the interpreter's stack.
        raise InvalidToolSchema(_too_deep(MAX_SCHEMA_DEPTH), tool=tool.name) from None
    if len(encoded) > MAX_SCHEMA_BYTES:
        raise InvalidToolSchema(
            f"{len(encoded)} bytes of JSON, more than the {MAX_SCHEMA_BYTES} allowed",
            tool=tool.name,
        )
    copied: dict[str, Any] = msgspec.json.decode(encoded)
    if _depth(copied, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise InvalidToolSchema(_too_deep(MAX_SCHEMA_DEPTH), tool=tool.name)
    kind = copied.get("type", "object")
    if kind != "object":
        raise InvalidToolSchema(f"the arguments must be an object, not {kind!r}", tool=tool.name)
    return copied


def _may_nest_deeper(arguments: ToolArguments) -> bool:
    if isinstance(arguments, str):
        return arguments.count("[") + arguments.count("{") > MAX_ARGUMENT_DEPTH
    if isinstance(arguments, bytes):
        return arguments.count(b"[") + arguments.count(b"{") > MAX_ARGUMENT_DEPTH
    return True


def _too_deep(limit: int) -> str:
    return f"objects and arrays nested more than {limit} deep"


def _depth(value: object, limit: int) -> int:
    # Iterative, so the depth is known before anything recursive (jsonschema) walks it; it
    # stops once past ``limit``, so the answer is exact only up to ``limit + 1``. Only
    # containers are stacked: a long flat array costs one isinstance per item.
    if not isinstance(value, dict | builtins.list):
        return 0
    deepest = popped = 0
    stack: builtins.list[tuple[dict[Any, Any] | builtins.list[Any], int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        popped += 1
        if popped % 1024 == 0:
            check_budget()
        deepest = max(deepest, level)
        if deepest > limit:
            break
        children = item.values() if isinstance(item, dict) else item
        stack.extend(
            [(child, level + 1) for child in children if isinstance(child, dict | builtins.list)]
        )
    return deepest


def _refuse(uri: str) -> referencing.Resource[Any]:
    # referencing chains this as the cause of its Unretrievable; the tool is named by whoever
    # turns that into the refusal the caller sees.
    raise InvalidToolSchema(f"the reference {_shown(uri)} is not in the schema; none is fetched")


# Every validator resolves references in this registry: what is not in the schema itself is
# refused, never fetched (jsonschema's default would open http and file URIs).
# (mypy does not see attrs' alias of the private ``_retrieve`` field.)
_NO_RETRIEVAL: Final[referencing.Registry[Any]] = referencing.Registry(retrieve=_refuse)  # type: ignore[call-arg]


def _check_references(
    cls: type[jsonschema.protocols.Validator], schema: dict[str, Any], tool: str
) -> None:
    """Refuse a schema whose references leave it or lead nowhere, or whose patterns RE2 refuses.

    Walks every subschema the schema's draft knows of, and every subschema a reference leads
    to (so a reference hidden under an unknown keyword is reached too), resolving each
    reference the way the validator will, against the schema alone.
    """
    keywords: set[str] = set()
    # The validator class's own draft, as jsonschema picks it (a meta-schema names itself).
    dialect = str(cls.META_SCHEMA.get("$schema", "urn:unknown-dialect"))
    spec = referencing.jsonschema.specification_with(
        dialect, default=referencing.Specification.OPAQUE
    )
    root = spec.create_resource(schema)
    stack = [(root, _NO_RETRIEVAL.resolver_with_root(root))]
    seen: set[int] = set()
    while stack:
        resource, resolver = stack.pop()
        contents = resource.contents
        if id(contents) in seen:
            continue
        seen.add(id(contents))
        if isinstance(contents, Mapping):
            _check_patterns(contents, tool)
            keywords.update(k for k in _PATTERN_COMPANIONS if k in contents)
            for keyword in _REFERENCE_KEYWORDS:
                ref = contents.get(keyword)
                if ref is None:
                    continue
                if not isinstance(ref, str) or not ref.startswith("#"):
                    raise InvalidToolSchema(
                        f"{keyword} {_shown(str(ref))} is not a local reference: only "
                        "'#...' references within the schema are allowed, nothing is fetched",
                        tool=tool,
                    )
                try:
                    target = resolver.lookup(ref)
                except referencing.exceptions.Unresolvable:
                    raise InvalidToolSchema(
                        f"{keyword} {_shown(ref)} does not resolve within the schema", tool=tool
                    ) from None
                stack.append((spec.create_resource(target.contents), target.resolver))
        for sub in resource.subresources():
            stack.append((sub, resolver.in_subresource(sub)))
    if keywords == set(_PATTERN_COMPANIONS):
        # jsonschema finds the properties unevaluatedProperties covers with its own ``re``
        # search of patternProperties' keys, which RE2 cannot stand in for.
        raise InvalidToolSchema(
            "unevaluatedProperties and patternProperties in one schema are not supported "
            "(patterns run in RE2)",
            tool=tool,
        )


# Keywords that cannot both appear in a schema (see the end of _check_references).
_PATTERN_COMPANIONS: Final = ("patternProperties", "unevaluatedProperties")


def _check_patterns(schema: Mapping[str, Any], tool: str) -> None:
    # Also where the meta-schema does not mark them ``format: regex`` (patternProperties' keys
    # before draft 6), so no pattern reaches the validator uncompiled.
    pattern = schema.get("pattern")
    patterns = schema.get("patternProperties")
    for each in ([pattern] if isinstance(pattern, str) else []) + (
        [k for k in patterns if isinstance(k, str)] if isinstance(patterns, Mapping) else []
    ):
        refusal = pattern_refusal(each)
        if refusal is not None:
            raise InvalidToolSchema(refusal, tool=tool)


def _json_type(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case builtins.list():
            return "an array"
        case _:
            return type(value).__name__
