"""``@capability``: turn a typed Python function into a :class:`~loom.runtime.tools.Tool`.

The decorator reads the function's signature and type hints once, at decoration time, and
builds from them a private ``msgspec.Struct`` type with one field per parameter. That type
gives both the JSON Schema an LLM sees (``parameters_schema``) and the validator every call
goes through (``msgspec.convert``), so the two can never disagree.

Semantics, in one place:

* **Parameters.** Positional-only, ordinary and keyword-only parameters all become fields of
  the arguments object; defaults are kept (and shown as ``default`` in the schema).
  ``*args``/``**kwargs``, a parameter without annotation, or an annotation msgspec cannot
  describe is an :class:`InvalidCapability` raised by the decorator, naming the function and
  the parameter. No silent ``Any``: an LLM needs a type to fill a field well, so an unannotated
  parameter is a mistake, and a deliberate ``x: Any`` still works.
* **Annotations are resolved when the decorator runs** (``typing.get_type_hints``), so with
  ``from __future__ import annotations`` the types must be importable names of the module,
  not locals of an enclosing function.
* **Descriptions.** ``description`` defaults to the docstring's first paragraph; parameter
  descriptions come from a Google-style ``Args:`` section. An explicit
  ``Annotated[T, msgspec.Meta(description=...)]`` wins over the docstring.
* **Schema shape.** ``$ref``\\ s are inlined so that LLM APIs which reject ``$ref`` accept the
  schema; only recursive types, which cannot be inlined, keep a ``$defs`` section and
  ``$ref``\\ s to it. The top level is always ``{"type": "object", ..., "additionalProperties":
  false}``.
* **Validation** is ``msgspec.convert(arguments, ArgsStruct)`` in strict mode: JSON input is
  already typed, so ``"5"`` is not an ``int`` and ``1`` is not a ``bool``. Strict mode still
  takes an ``int`` for a ``float`` and the string forms of types JSON lacks (``datetime``,
  ``UUID``, ``Decimal``, base64 ``bytes``). It refuses ``1.0`` for an ``int``, which JSON Schema
  would accept. Unknown fields are rejected. Any mismatch is an :class:`InvalidToolArguments`
  with ``path`` (``("items", 0, "qty")``) and msgspec's ``reason``; msgspec does not name dict
  keys, so inside a ``dict`` value the path stops at the dict and the reason carries msgspec's
  location (``$.stock[...].qty``).
* ``x: Any`` and ``object`` mean any JSON value (schema ``{}``).
* **Running.** ``async def`` functions are awaited in the caller's task; plain functions run in
  a worker thread (``anyio.to_thread.run_sync``) so they never block the event loop. A thread
  cannot be interrupted: a cancelled (or timed-out) call to a sync capability returns at once
  and the function runs on in its thread to the end, its result discarded, as with the
  registry's ``FunctionTool``. Give sync capabilities a short runtime or their own limits.
* **Result.** The return value goes through ``msgspec.to_builtins`` (Structs, dataclasses,
  datetimes, UUIDs... become JSON-compatible builtins; mapping keys become strings). It is not
  validated against the return annotation; ``result_schema`` describes that annotation (``{}``
  when there is none).
* **Direct calls.** The decorated object stays callable exactly like the function: ``upper("x")``
  returns the coroutine (or, for a sync function, the result) without validation, threads or
  conversion, which keeps unit tests of the plain logic plain.
* **Other callables.** A bound method, a ``functools.partial`` or a callable object works too
  (hints from the function or ``__call__``); a callable object needs an explicit name.
* **Methods.** A function defined in a class body (``def m(self, ...)``) is a method capability:
  ``self`` is not in the schema, and reading it from an instance yields a
  :class:`BoundCapability` for that instance, which is the :class:`Tool` an agent registers.
  The decision is made at decoration time, from where the function is *defined* (its
  ``__qualname__`` is ``Cls.m``) and from its first parameter (named ``self``, or without
  annotation: every tool parameter needs one, so that one is the instance). A function in a
  class body without such a parameter is a static capability, whichever order ``@staticmethod``
  and ``@capability`` are written in; ``@classmethod`` is refused.
* ``timeout``, ``max_concurrency`` and ``tags`` are metadata for the registry
  (``ToolRegistry.register(tool, timeout=tool.timeout, max_concurrency=tool.max_concurrency)``);
  this module does not enforce them. ``timeout=None`` means the registry's default and
  ``math.inf`` none, as in the registry.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
import typing
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeAlias, TypeVar, cast, overload

import anyio.to_thread
import msgspec

from loom.runtime import LoomError
from loom.runtime.tools import InvalidToolArguments

__all__ = [
    "BoundCapability",
    "Capability",
    "InvalidCapability",
    "JSONValue",
    "capabilities_of",
    "capability",
]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
R2 = TypeVar("R2")
T = TypeVar("T")

JSONValue: TypeAlias = (
    "bool | int | float | str | list[JSONValue] | tuple[JSONValue, ...]"
    " | dict[str, JSONValue] | None"
)
"""What a capability's ``call`` returns: JSON-compatible builtins (``msgspec.to_builtins`` keeps
tuples as tuples; every JSON encoder writes them as arrays)."""

JSONSchema: TypeAlias = dict[str, Any]

# Loom names are dotted words, e.g. ``text.upper`` or ``github.create_issue``.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_NAME_MAX = 128
_ARGS_SECTION_RE = re.compile(r"^(\s*)(Args|Arguments|Parameters):\s*$")
_ARG_LINE_RE = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


class InvalidCapability(LoomError, TypeError):
    """``@capability`` was applied to something it cannot turn into a tool.

    Raised at decoration time (import time, usually), so a bad signature never reaches an LLM.

    Attributes:
        function: the qualified name of the decorated function.
        reason: what is wrong, in words.
    """

    def __init__(self, function: str, reason: str) -> None:
        super().__init__(f"@capability on {function}: {reason}")
        self.function = function
        self.reason = reason


class _Spec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything derived from the function once, shared by a capability and its bindings."""

    name: str
    description: str
    parameters_schema: JSONSchema
    result_schema: JSONSchema
    timeout: float | None
    max_concurrency: int | None
    tags: frozenset[str]
    func: Callable[..., Any]
    is_async: bool
    is_method: bool
    args_type: type[msgspec.Struct]
    # Fields passed by position (positional-only parameters), then by keyword.
    positional: tuple[str, ...]
    keyword: tuple[str, ...]

    def validate(self, arguments: object) -> msgspec.Struct:
        if isinstance(arguments, Mapping) and not isinstance(arguments, dict):
            arguments = dict(arguments)
        try:
            return msgspec.convert(arguments, self.args_type, strict=True)
        except msgspec.ValidationError as exc:
            path, reason = _error_location(str(exc))
            raise InvalidToolArguments(reason, path=path, tool=self.name) from None

    async def invoke(self, bound_to: tuple[object, ...], arguments: object) -> JSONValue:
        values = self.validate(arguments)
        args = (*bound_to, *(getattr(values, f) for f in self.positional))
        kwargs = {f: getattr(values, f) for f in self.keyword}
        if self.is_async:
            result = await self.func(*args, **kwargs)
        else:
            # Like the registry's FunctionTool: a thread cannot be interrupted, so a cancelled
            # (timed out) call returns at once and the thread finishes alone, unheard.
            result = await anyio.to_thread.run_sync(
                functools.partial(self._run_sync, args, kwargs), abandon_on_cancel=True
            )
        return cast(JSONValue, msgspec.to_builtins(result, str_keys=True))

    def _run_sync(self, args: tuple[object, ...], kwargs: dict[str, object]) -> object:
        result = self.func(*args, **kwargs)
        if inspect.isawaitable(result):
            # Checked in the thread, so that the coroutine is closed, not leaked un-awaited
            # (and so that asyncio and trio report it alike).
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                f"capability {self.name!r}: {_qualname(self.func)} is not `async def` but "
                "returned an awaitable; declare it `async def`"
            )
        return result


class _Described:
    """The metadata a capability and its bindings share (read-only views of one spec)."""

    _spec: _Spec

    #: The registry may skip its JSON Schema pass (see ``loom.runtime.tools.validates_itself``):
    #: every call converts its arguments strictly with msgspec, from the same type hints the
    #: schema was derived from.
    validates_arguments = True

    @property
    def name(self) -> str:
        """The tool name, e.g. ``text.upper``."""
        return self._spec.name

    @property
    def description(self) -> str:
        """What the tool does, for an LLM deciding whether to call it."""
        return self._spec.description

    @property
    def parameters_schema(self) -> Mapping[str, Any]:
        """JSON Schema of the arguments object. Shared: do not mutate."""
        return self._spec.parameters_schema

    @property
    def result_schema(self) -> Mapping[str, Any]:
        """JSON Schema of the return annotation (``{}`` when unannotated). Shared: do not mutate."""
        return self._spec.result_schema

    @property
    def timeout(self) -> float | None:
        """Seconds the registry should allow a call: ``None`` for its default, ``math.inf`` none."""
        return self._spec.timeout

    @property
    def max_concurrency(self) -> int | None:
        """How many calls the registry should run at once, or ``None`` for no limit."""
        return self._spec.max_concurrency

    @property
    def tags(self) -> frozenset[str]:
        """Free-form labels for selecting tools."""
        return self._spec.tags

    @property
    def is_method(self) -> bool:
        """Whether this capability was defined in a class body and needs an instance."""
        return self._spec.is_method


class Capability(_Described, Generic[P, R]):
    """A function made into a :class:`~loom.runtime.tools.Tool` by :func:`capability`.

    Calling the object calls the function unchanged; :meth:`call` is the tool entry point
    (validate, run, convert). Defined in a class body, it is a descriptor: reading it from an
    instance gives a :class:`BoundCapability`.
    """

    # Copied from the function by ``functools.update_wrapper``, as on any decorated function.
    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, R]

    def __init__(self, spec: _Spec) -> None:
        self._spec = spec
        functools.update_wrapper(self, spec.func)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function directly: no validation, no thread, no result conversion."""
        return cast(R, self._spec.func(*args, **kwargs))

    async def call(self, arguments: Mapping[str, Any]) -> JSONValue:
        """Validate ``arguments``, run the function and return its result as JSON builtins.

        Raises:
            InvalidToolArguments: the arguments do not match the parameters' schema.
            TypeError: this is a method capability read from the class, not from an instance.
        """
        if self._spec.is_method:
            raise TypeError(
                f"capability {self.name!r} is a method of {_owner_name(self._spec.func)}; "
                "read it from an instance to get a tool"
            )
        return await self._spec.invoke((), arguments)

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(
        self: Capability[Concatenate[T, P2], R2], instance: T, owner: type[Any] | None = None
    ) -> BoundCapability[P2, R2]: ...
    def __get__(
        self, instance: object, owner: type[Any] | None = None
    ) -> Capability[P, R] | BoundCapability[Any, Any]:
        if instance is None or not self._spec.is_method:
            return self
        return BoundCapability(self, instance)

    def __repr__(self) -> str:
        return f"<Capability {self.name!r} of {_qualname(self._spec.func)}>"


class BoundCapability(_Described, Generic[P, R]):
    """A method capability bound to one instance: the :class:`~loom.runtime.tools.Tool` to register.

    Every read of the attribute makes a new binding (as with bound methods); bindings of the
    same capability to the same instance compare equal.

    Attributes:
        __self__: the instance the method runs on.
        __func__: the unbound :class:`Capability`.
    """

    def __init__(self, capability: Capability[..., Any], instance: object) -> None:
        self._spec = capability._spec
        self.__self__ = instance
        self.__func__ = capability

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the method directly on the bound instance, like a bound method."""
        return cast(R, self._spec.func(self.__self__, *args, **kwargs))

    async def call(self, arguments: Mapping[str, Any]) -> JSONValue:
        """Validate ``arguments``, run the method on the instance, return JSON builtins.

        Raises:
            InvalidToolArguments: the arguments do not match the parameters' schema.
        """
        return await self._spec.invoke((self.__self__,), arguments)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BoundCapability):
            return NotImplemented
        return self._spec is other._spec and self.__self__ is other.__self__

    def __hash__(self) -> int:
        return hash((id(self._spec), id(self.__self__)))

    def __repr__(self) -> str:
        return f"<BoundCapability {self.name!r} of {self.__self__!r}>"


class _Decorator(typing.Protocol):
    def __call__(self, func: Callable[P, R], /) -> Capability[P, R]: ...


@overload
def capability(func: Callable[P, R], /) -> Capability[P, R]: ...
@overload
def capability(
    name: str | None = None,
    /,
    *,
    description: str | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    tags: Collection[str] = (),
) -> _Decorator: ...
def capability(
    name_or_func: str | Callable[..., Any] | None = None,
    /,
    *,
    description: str | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    tags: Collection[str] = (),
) -> Capability[Any, Any] | _Decorator:
    """Make a typed function (or method) a tool an agent offers and an LLM can call.

    Usable bare (``@capability``), with a name (``@capability("text.upper")``) or with options::

        @capability("text.upper", description="Upper-case a text")
        async def upper(text: str) -> str:
            return text.upper()

    Args:
        name_or_func: the tool name (dotted words: letters, digits, ``_`` and ``-``); defaults
            to the function's ``__name__``.
        description: what the tool does; defaults to the docstring's first paragraph.
        timeout: seconds the registry should allow one call (``math.inf``: no limit; not
            enforced here).
        max_concurrency: calls the registry should run at once (not enforced here).
        tags: free-form labels.

    Returns:
        A :class:`Capability`, or a decorator making one.

    Raises:
        InvalidCapability: a bad option, or a function that cannot be described by a schema
            (``*args``/``**kwargs``, a parameter without annotation, an unsupported type...).
    """
    if name_or_func is not None and not isinstance(name_or_func, str):
        return _build(name_or_func, None, description, timeout, max_concurrency, tags)
    name = name_or_func  # a str or None, by the test above

    def decorate(func: Callable[P, R], /) -> Capability[P, R]:
        return _build(func, name, description, timeout, max_concurrency, tags)

    return decorate


def capabilities_of(obj: object) -> list[Capability[..., Any] | BoundCapability[..., Any]]:
    """Every capability declared on ``obj``'s class (and bases), bound to ``obj``.

    A name defined in a subclass hides the base class's attribute of that name, capability or
    not. The order is definition order, base classes first.
    """
    mro = type(obj).__mro__
    # Names in definition order, base classes first ...
    names = dict.fromkeys(attr for klass in reversed(mro) for attr in vars(klass))
    found: list[Capability[..., Any] | BoundCapability[..., Any]] = []
    for attr in names:
        # ... each resolved as attribute lookup on the class would resolve it.
        value = next(vars(klass)[attr] for klass in mro if attr in vars(klass))
        if isinstance(value, staticmethod):
            value = value.__func__
        if isinstance(value, Capability):
            found.append(value.__get__(obj, type(obj)))
    return found


# ------------------------------------------------------------------------------------ building


def _build(
    func: Callable[P, R],
    name: str | None,
    description: str | None,
    timeout: float | None,
    max_concurrency: int | None,
    tags: Collection[str],
) -> Capability[P, R]:
    raw: object = func
    if isinstance(raw, staticmethod):
        func = raw.__func__
    elif isinstance(raw, classmethod):
        raise InvalidCapability(
            _qualname(raw.__func__), "classmethods are not supported; use a method or a function"
        )
    where = _qualname(func)
    if isinstance(func, Capability):
        raise InvalidCapability(where, "the function is already a capability")
    if not callable(func):
        raise InvalidCapability(repr(func), "expected a function")
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        raise InvalidCapability(where, "generator functions cannot be tools; return a list")

    # Where hints, docstring and async-ness live: the function itself, a bound method, a
    # partial's function, or a callable object's ``__call__``.
    target = _code_of(func)
    if name is None:
        name = getattr(func if inspect.isfunction(func) else target, "__name__", "")
        if name == "__call__":
            raise InvalidCapability(where, "a callable object needs an explicit name")
    if not isinstance(name, str) or len(name) > _NAME_MAX or not _NAME_RE.match(name):
        raise InvalidCapability(
            where,
            f"invalid name {name!r}: use dotted words of letters, digits, '_' and '-' "
            f"(at most {_NAME_MAX} characters)",
        )
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise InvalidCapability(where, f"timeout must be a positive number, got {timeout!r}")
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int)
    ):
        raise InvalidCapability(where, f"max_concurrency must be an int, got {max_concurrency!r}")
    if max_concurrency is not None and max_concurrency < 1:
        raise InvalidCapability(where, f"max_concurrency must be at least 1, got {max_concurrency}")
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise InvalidCapability(where, f"tags must be a collection of strings, got {tags!r}")

    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise InvalidCapability(where, f"cannot read its signature ({exc})") from None
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception as exc:
        # NameError for a forward reference to a local, TypeError for a bad expression...
        raise InvalidCapability(where, f"cannot resolve its type hints ({exc!r})") from None

    params = list(signature.parameters.values())
    # Only a plain function written in a class body can be a method (a bound method, a partial
    # or a callable object already has its instance).
    is_method = (
        not isinstance(raw, staticmethod)
        and inspect.isfunction(func)
        and _defined_in_class(func)
        and _takes_self(params, hints)
    )
    if is_method:
        params = params[1:]

    doc = inspect.getdoc(target if isinstance(func, functools.partial) else func) or ""
    arg_docs = _docstring_args(doc)
    fields: list[tuple[str, Any, Any]] = []
    positional: list[str] = []
    keyword: list[str] = []
    patched_defaults: dict[str, Any] = {}
    for p in params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            star = "*" if p.kind is inspect.Parameter.VAR_POSITIONAL else "**"
            raise InvalidCapability(
                where, f"{star}{p.name} is not supported: every argument needs a name and a type"
            )
        if p.name not in hints:
            raise InvalidCapability(where, f"parameter {p.name!r} has no type annotation")
        (positional if p.kind is inspect.Parameter.POSITIONAL_ONLY else keyword).append(p.name)
        if p.default is inspect.Parameter.empty:
            fields.append((p.name, hints[p.name], msgspec.NODEFAULT))
        elif _is_nonempty_mutable(p.default):
            # msgspec refuses shared mutable defaults; give each call its own copy and put the
            # default into the schema ourselves.
            factory = functools.partial(copy.deepcopy, p.default)
            fields.append((p.name, hints[p.name], msgspec.field(default_factory=factory)))
            patched_defaults[p.name] = p.default
        else:
            fields.append((p.name, hints[p.name], p.default))

    try:
        args_type = msgspec.defstruct(
            re.sub(r"\W", "_", name) + "_arguments",
            fields,
            kw_only=True,
            forbid_unknown_fields=True,
            module=getattr(func, "__module__", None),
        )
        parameters_schema = _schema(args_type)
    except (TypeError, ValueError) as exc:
        raise InvalidCapability(where, _schema_error(exc, fields)) from None

    parameters_schema.pop("title", None)
    properties: dict[str, JSONSchema] = parameters_schema.setdefault("properties", {})
    for field, default in patched_defaults.items():
        properties[field]["default"] = msgspec.to_builtins(default, str_keys=True)
    for field, text in arg_docs.items():
        if field in properties:
            properties[field].setdefault("description", text)

    return_type = hints.get("return", Any)
    try:
        result_schema = _schema(return_type)
    except (TypeError, ValueError) as exc:
        raise InvalidCapability(
            where, f"return type {return_type!r} has no schema ({exc})"
        ) from None

    spec = _Spec(
        name=name,
        description=_first_paragraph(doc) if description is None else description,
        parameters_schema=parameters_schema,
        result_schema=result_schema,
        timeout=None if timeout is None else float(timeout),
        max_concurrency=max_concurrency,
        tags=frozenset(tags),
        func=func,
        is_async=inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(target),
        is_method=is_method,
        args_type=args_type,
        positional=tuple(positional),
        keyword=tuple(keyword),
    )
    return Capability(spec)


def _schema(tp: Any) -> JSONSchema:
    """``msgspec.json.schema(tp)`` with every non-recursive ``$ref`` inlined."""
    raw = msgspec.json.schema(tp, schema_hook=_object_schema)
    defs: dict[str, JSONSchema] = raw.pop("$defs", {})
    kept: dict[str, JSONSchema] = {}
    pending: list[str] = []

    def expand(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [expand(item, stack) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = ref.removeprefix("#/$defs/")
            siblings = {k: expand(v, stack) for k, v in node.items() if k != "$ref"}
            if target in stack:
                # A cycle: the type contains itself, so it stays a reference.
                if target not in kept and target not in pending:
                    pending.append(target)
                return {"$ref": ref, **siblings}
            return {**expand(defs[target], (*stack, target)), **siblings}
        return {k: expand(v, stack) for k, v in node.items() if k != _ANY_MARK}

    out: JSONSchema = expand(raw, ())
    while pending:
        target = pending.pop()
        kept[target] = {}  # claim the name first so self-references do not re-queue it
        kept[target] = expand(defs[target], (target,))
    if kept:
        out["$defs"] = kept
    return out


_ANY_MARK = "x-loom-any"


def _object_schema(tp: Any) -> JSONSchema:
    # msgspec takes ``object`` as "anything" when converting but has no schema for it.
    if tp is object:
        # An empty schema is taken by msgspec as "no schema"; mark it, and drop the mark later.
        return {_ANY_MARK: True}
    raise NotImplementedError


def _schema_error(exc: Exception, fields: list[tuple[str, Any, Any]]) -> str:
    # msgspec's message names the type but not the parameter; find the parameter that fails.
    for field, tp, default in fields:
        try:
            _schema(msgspec.defstruct("probe", [(field, tp, default)], kw_only=True))
        except (TypeError, ValueError):
            return f"parameter {field!r}: {exc}"
    return str(exc)


_AT_SEP = " - at `"
_PATH_TOKEN_RE = re.compile(r"\.([^.\[]+)|\[(\d+)\]|(\[\.\.\.\])")


def _error_location(message: str) -> tuple[tuple[str | int, ...], str]:
    """Split msgspec's ``"Expected `int`, got `str` - at `$.items[0].qty`"`` into a path and a
    reason. msgspec does not name dict keys (``$.m[...]``); the path then stops at the dict and
    the reason keeps msgspec's location."""
    what, sep, at = message.partition(_AT_SEP)
    if not sep:
        return (), message
    at = at.removesuffix("`")
    in_key = at.startswith("key` in `")
    location = at.removeprefix("key` in `") if in_key else at
    path: list[str | int] = []
    pos = 1 if location.startswith("$") else len(location)
    while pos < len(location):
        token = _PATH_TOKEN_RE.match(location, pos)
        if token is None or token.group(3):
            return tuple(path), f"{what} (at `{location}`{' key' if in_key else ''})"
        path.append(token.group(1) if token.group(1) is not None else int(token.group(2)))
        pos = token.end()
    return tuple(path), f"{what} (in a key)" if in_key else what


def _is_nonempty_mutable(value: object) -> bool:
    return isinstance(value, list | dict | set | bytearray) and len(value) > 0


def _defined_in_class(func: Callable[..., Any]) -> bool:
    # PEP 3155: ``Cls.f`` or ``outer.<locals>.Cls.f`` is defined in a class body;
    # ``f`` and ``outer.<locals>.f`` are not.
    parts = getattr(func, "__qualname__", "").split(".")
    return len(parts) >= 2 and parts[-2] != "<locals>"


def _code_of(func: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isfunction(func) or inspect.ismethod(func):
        return func
    if isinstance(func, functools.partial):
        return _code_of(func.func)
    call: Callable[..., Any] = func.__call__  # type: ignore[operator]
    return call


def _takes_self(params: list[inspect.Parameter], hints: dict[str, Any]) -> bool:
    # Every tool parameter must be annotated, so an unannotated first parameter (or one named
    # ``self``) is the instance; a function without one is a static function in a class body
    # (``@staticmethod`` applied over ``@capability``).
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        return False
    return params[0].name == "self" or params[0].name not in hints


def _qualname(func: object) -> str:
    return str(getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or func)


def _owner_name(func: Callable[..., Any]) -> str:
    return _qualname(func).rpartition(".")[0]


def _first_paragraph(doc: str) -> str:
    paragraph = doc.strip().split("\n\n", 1)[0] if doc.strip() else ""
    if _ARGS_SECTION_RE.match(paragraph.splitlines()[0] if paragraph else ""):
        return ""
    return " ".join(line.strip() for line in paragraph.splitlines())


def _docstring_args(doc: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section."""
    lines = doc.splitlines()
    out: dict[str, str] = {}
    for i, line in enumerate(lines):
        header = _ARGS_SECTION_RE.match(line)
        if header is None:
            continue
        base = len(header.group(1))
        out.update(_parse_args_block(_section_lines(lines[i + 1 :], base)))
        break
    return out


def _section_lines(lines: list[str], base: int) -> Iterator[tuple[int, str]]:
    for line in lines:
        if not line.strip():
            yield -1, ""
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= base:
            return
        yield indent, line.strip()


def _parse_args_block(lines: Iterator[tuple[int, str]]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    entry_indent: int | None = None
    current: list[str] | None = None
    for indent, text in lines:
        if indent < 0:
            continue
        if entry_indent is None:
            entry_indent = indent
        match = _ARG_LINE_RE.match(text) if indent == entry_indent else None
        if match is not None:
            current = out.setdefault(match.group(1).lstrip("*"), [])
            if match.group(3):
                current.append(match.group(3))
        elif current is not None:
            current.append(text)
    return {name: " ".join(words) for name, words in out.items() if words}
