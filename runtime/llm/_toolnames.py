"""A collision-free mapping between Loom's tool names and the names LLM APIs accept.

OpenAI and Anthropic accept tool names matching ``[A-Za-z0-9_-]{1,64}``; Loom's are dotted
(``fs.read``, ``github.create_issue``) and of any length. The mapping is computed for the set of
tools of one request:

* a name that is already valid maps to itself;
* otherwise every character outside the alphabet becomes ``_`` (``fs.read`` -> ``fs_read``),
  provided that result is valid and no other name of the set maps to it or is it;
* otherwise (two names collide, or the result is longer than 64) the sanitised name is cut
  and suffixed with ``_`` and 8 hex digits of the SHA-256 of the original name.

The result depends only on the *set* of names, not on their order, so a conversation keeps the
same wire names from turn to turn while its tools stay the same.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping

__all__ = ["MAX_WIRE_NAME", "ToolNameMap", "sanitize_tool_name"]

MAX_WIRE_NAME = 64
"""The longest tool name OpenAI's and Anthropic's APIs accept."""

_VALID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INVALID_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def sanitize_tool_name(name: str) -> str:
    """``name`` with every character an LLM API rejects replaced by ``_`` (not shortened)."""
    return _INVALID_CHAR.sub("_", name) or "_"


def _hashed(name: str, digits: int) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()[:digits]
    stem = sanitize_tool_name(name)[: MAX_WIRE_NAME - digits - 1]
    return f"{stem}_{digest}"


class ToolNameMap:
    """Bijection between a set of Loom tool names and API-safe wire names.

    Args:
        names: the tool names of one request; duplicates are ignored.
    """

    __slots__ = ("_from_wire", "_to_wire")

    def __init__(self, names: Iterable[str]) -> None:
        unique = sorted(set(names))
        fixed = {n for n in unique if _VALID.fullmatch(n)}
        plain = {n: sanitize_tool_name(n) for n in unique if n not in fixed}
        clashes = Counter(plain.values())
        to_wire = {n: n for n in fixed}
        taken = set(fixed)
        hashed: list[str] = []
        for name, candidate in plain.items():
            if (
                clashes[candidate] == 1
                and candidate not in taken
                and _VALID.fullmatch(candidate) is not None
            ):
                to_wire[name] = candidate
                taken.add(candidate)
            else:
                hashed.append(name)
        # Hashed names go last so that a plain name never loses its wire name to a hash; a hash
        # that still collides (astronomically unlikely) gets more digits until it does not.
        for name in hashed:
            digits = 8
            wire = _hashed(name, digits)
            while wire in taken:
                digits += 4
                wire = _hashed(name, digits)
            to_wire[name] = wire
            taken.add(wire)
        self._to_wire: Mapping[str, str] = to_wire
        self._from_wire: Mapping[str, str] = {w: n for n, w in to_wire.items()}

    def to_wire(self, name: str) -> str:
        """The wire name of ``name``.

        A name outside the set (a call in old history whose tool is gone) is sanitised and cut
        to length on a best-effort basis; it cannot collide with a *current* tool's name in a
        way that matters, since the model cannot call it anyway.
        """
        wire = self._to_wire.get(name)
        if wire is not None:
            return wire
        return sanitize_tool_name(name)[:MAX_WIRE_NAME]

    def from_wire(self, wire: str) -> str | None:
        """Loom's name for a wire name the model used, or ``None`` when it was not offered."""
        return self._from_wire.get(wire)

    def __len__(self) -> int:
        return len(self._to_wire)

    def __repr__(self) -> str:
        return f"ToolNameMap({dict(self._to_wire)!r})"
