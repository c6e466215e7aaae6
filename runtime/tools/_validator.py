"""The JSON Schema validator a registry compiles for a tool: patterns in RE2, work within a budget.

A tool's schema may come from a client (a remote agent declares it), and its arguments from
another; validating them must not let either one stall the server.

* **Patterns run in RE2.** jsonschema matches ``pattern``, ``patternProperties`` (and their use by
  ``additionalProperties``) with Python's ``re``, which backtracks: ``^(a+)+$`` against 30
  characters runs for many seconds and holds the GIL throughout, so not even a worker thread
  would keep the server answering. RE2 runs in time linear in the text and refuses what needs
  backtracking (backreferences, lookaround). A pattern RE2 cannot compile is refused when the
  tool is registered, never matched with ``re`` instead.
* **Every keyword checks a budget first.** Validation runs in a worker thread (the registry's
  doing); a schema slow by construction (``anyOf`` nested through references, 2**n branches)
  stops at the call's deadline, or as soon as the call is cancelled, instead of running on in a
  thread nobody waits for.
* **uniqueItems is linear** (jsonschema falls back to comparing every pair of objects).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, TypeVar

import jsonschema
import jsonschema.protocols
import jsonschema.validators
import re2
from jsonschema.exceptions import ValidationError

__all__ = [
    "Budget",
    "OutOfBudget",
    "check_budget",
    "pattern_refusal",
    "schema_format_checker",
    "shown",
    "validator_class",
]

_OPTIONS: Final = re2.Options()
# A client's bad pattern is refused with a typed error; RE2 must not also log it on stderr.
_OPTIONS.log_errors = False
# Each compiled pattern's memory (program and DFA cache; RE2's default is 8 MiB). A pattern that
# needs more to compile is refused; past it when matching, RE2 goes on without its DFA (slower,
# still linear). With the cache below, compiled patterns hold at most ~2 x 128 MiB.
_OPTIONS.max_mem = 1 << 20

_LIMITATION: Final = "patterns run in RE2: no backreferences or lookaround"

# How many items a loop of ours handles between two looks at the budget.
_CHECK_EVERY: Final = 1024

Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Any]

T = TypeVar("T")


class OutOfBudget(Exception):
    """Raised inside validation once its budget is spent; the registry says why (timeout)."""


class Budget:
    """How long one validation may run, and whether anyone still waits for it.

    Read by the worker thread at every keyword; written by the task that waits for it.
    """

    __slots__ = ("abandoned", "deadline")

    def __init__(self, seconds: float) -> None:
        # time.monotonic, not the event loop's clock: trio's clock has an offset of its own.
        self.deadline = time.monotonic() + seconds
        self.abandoned = False

    def spent(self) -> bool:
        return self.abandoned or time.monotonic() > self.deadline

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in this thread with this budget checked at every keyword."""
        _current.budget = self
        try:
            return fn(*args)
        finally:
            _current.budget = None


class _Current(threading.local):
    budget: Budget | None = None


_current: Final = _Current()


def check_budget() -> None:
    """Raise :class:`OutOfBudget` when this thread's validation has run out of time."""
    budget = _current.budget
    if budget is not None and budget.spent():
        raise OutOfBudget


# (re2.compile keeps a cache of its own, of 128, but rebuilds its key from the options each call.)
@functools.lru_cache(maxsize=128)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _OPTIONS)


def pattern_refusal(pattern: str) -> str | None:
    """Why RE2 cannot take ``pattern`` (a message naming it), or ``None`` when it can."""
    try:
        _compiled(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return f"the pattern {shown(pattern)} is not supported ({_LIMITATION}): {reason}"
    return None


def _search(pattern: str, text: str) -> bool:
    # Every pattern compiled when its schema was registered; usually this is a cache hit.
    return _compiled(pattern).search(text) is not None


def schema_format_checker(
    cls: type[jsonschema.protocols.Validator],
) -> jsonschema.FormatChecker:
    """The format checker ``check_schema`` uses: the draft's own, with ``regex`` meaning RE2.

    The meta-schemas mark ``pattern`` (and ``patternProperties``' keys) as ``format: regex``;
    jsonschema would check them with ``re``, refusing what RE2 takes and taking what it refuses.
    """
    checker = jsonschema.FormatChecker(())
    checker.checkers = dict(cls.FORMAT_CHECKER.checkers)
    checker.checks("regex")(lambda value: not isinstance(value, str) or not pattern_refusal(value))
    return checker


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{shown(instance)} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    # jsonschema's, with the patterns in RE2 (it joins them into one ``re`` pattern).
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = {
        key
        for key in instance
        if key not in properties and not any(_search(p, key) for p in patterns)
    }
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            regexes = ", ".join(repr(each) for each in sorted(patterns))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {regexes}")
        else:
            unexpected = ", ".join(repr(each) for each in sorted(extras, key=str))
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({unexpected} {verb} unexpected)"
            )


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for index, item in enumerate(instance):
        if index % _CHECK_EVERY == 0:
            check_budget()
        key = _identity(item)
        if key in seen:
            yield ValidationError(f"{shown(repr(instance))} has non-unique elements")
            return
        seen.add(key)


def _identity(value: Any) -> Any:
    # A hashable value equal for JSON-equal values: 1 and 1.0 alike (as in Python), but true
    # and 1 apart, and objects by their members whatever the key order.
    if isinstance(value, bool):
        return (bool, value)
    if isinstance(value, Mapping):
        return (dict, frozenset((k, _identity(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (list, tuple(_identity(v) for v in value))
    return value


def _budgeted(keyword: Keyword) -> Keyword:
    def checked(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Any:
        check_budget()
        return keyword(validator, value, instance, schema)

    return checked


_OURS: Final[Mapping[str, Keyword]] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}


@functools.cache
def validator_class(
    cls: type[jsonschema.protocols.Validator],
) -> type[jsonschema.protocols.Validator]:
    """``cls`` (a draft's validator) with RE2 patterns and a budget check at every keyword."""
    keywords = {
        name: _budgeted(_OURS.get(name, keyword)) for name, keyword in cls.VALIDATORS.items()
    }
    extended: type[jsonschema.protocols.Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        cls, keywords
    )
    return extended


def shown(text: str) -> str:
    """``text`` quoted for a message, cut at 200 characters."""
    # The client's own text, echoed back in a message; bounded so an error stays a line.
    return repr(text if len(text) <= 200 else text[:200] + "...")
