"""One owner per piece of state: the mailbox, the bus, the agent cell, the remote agent, the
runtime, the reply router and the collaboration primitives touch each other only through what
each offers, never through another object's private members.

A private member is a name with one leading underscore; ``self._x`` and ``cls._x`` are the
object's own business. Anything else (``sub._buf``, ``self._bus._draining``,
``runtime._cells``) is one module writing or reading state that another owns.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime"

CHECKED = (
    "_bus.py",
    "_cell.py",
    "_subscription.py",
    "_remote.py",
    "_context.py",
    "_runtime.py",
    "collab/_replies.py",
    "collab/_base.py",
    "collab/_gather.py",
)

# The exceptions, by module: the class whose private members that module may touch on any
# instance, not only on ``self``, and why.
OWNERS: dict[str, tuple[str, str]] = {
    # The module that owns the mailbox state. Its fast paths (fan_out, put_waiting, park...)
    # are functions, not methods, so Subscription's public face stays the user's; fan_out
    # works on every subscription of a route in one call, because a call per subscriber would
    # cost the bus about a tenth of its fan-out rate.
    "_subscription.py": ("Subscription", "owner of the mailbox state"),
}

# The exceptions, by function: the private members one function may touch, and why. None
# now: the agent loop, the last, takes each event through the mailbox owner's take() (see
# Cell._worker for what paid for the call).
HOT_PATHS: dict[tuple[str, str], frozenset[str]] = {}


def _members(tree: ast.Module, class_name: str) -> set[str]:
    """The names a class declares: its ``__slots__``, its methods, what it assigns on self."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            names: set[str] = set()
            for item in ast.walk(node):
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(item.name)
                elif isinstance(item, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__slots__" for t in item.targets
                ):
                    names.update(
                        e.value
                        for e in ast.walk(item.value)
                        if isinstance(e, ast.Constant) and isinstance(e.value, str)
                    )
                elif (
                    isinstance(item, ast.Attribute)
                    and isinstance(item.value, ast.Name)
                    and item.value.id == "self"
                ):
                    names.add(item.attr)
            return names
    raise AssertionError(f"no class {class_name} in the module")


def foreign_private_accesses(
    source: str,
    allowed: AbstractSet[str] = frozenset(),
    hot: Mapping[str, AbstractSet[str]] | None = None,
) -> list[str]:
    """``line: expression`` for every private member reached on something other than
    ``self``/``cls`` (names in ``allowed`` excepted, and in a function named in ``hot`` the
    names listed for it)."""
    found: list[str] = []
    excused: set[int] = set()
    tree = ast.parse(source)
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and hot and fn.name in hot:
            excused.update(
                id(n)
                for n in ast.walk(fn)
                if isinstance(n, ast.Attribute) and n.attr in hot[fn.name]
            )
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in excused:
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__") or name in allowed:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(found, key=lambda s: int(s.split(":")[0]))


@pytest.mark.parametrize("module", CHECKED)
def test_no_module_touches_another_objects_private_members(module: str) -> None:
    source = (RUNTIME / module).read_text()
    allowed: set[str] = set()
    if module in OWNERS:
        class_name, _why = OWNERS[module]
        allowed = _members(ast.parse(source), class_name)
    hot = {fn: names for (mod, fn), names in HOT_PATHS.items() if mod == module}
    assert foreign_private_accesses(source, allowed, hot) == [], (
        f"runtime/{module} reaches into another object's private members; go through what "
        "its owner offers (or, if this module owns that state, say so in OWNERS)"
    )


def test_the_client_session_keeps_to_what_the_client_hands_it() -> None:
    # Outside runtime/, the same rule: the bridge client's stream session gets the client's
    # counters, metadata and subscriptions handed in, and touches none of its members.
    source = (ROOT / "bridge" / "_client_session.py").read_text()
    assert foreign_private_accesses(source) == []


def test_the_check_sees_what_it_must() -> None:
    source = """
class Sub:
    __slots__ = ("_buf",)

    def _take(self): ...

def f(sub, bus, self):
    self._ok
    sub._buf
    bus._hooks._draining
    sub._take()
    sub.public
    sub.__class__
"""
    assert foreign_private_accesses(source) == [
        "9: sub._buf",
        "10: bus._hooks._draining",
        "10: bus._hooks",
        "11: sub._take",
    ]
    owned = _members(ast.parse(source), "Sub")
    assert foreign_private_accesses(source, owned) == [
        "10: bus._hooks._draining",
        "10: bus._hooks",
    ]
    assert foreign_private_accesses(source, hot={"f": {"_buf", "_hooks"}}) == [
        "10: bus._hooks._draining",
        "11: sub._take",
    ]


def test_every_excused_name_is_still_used() -> None:
    # An exception that nothing needs any more goes, so the list stays the list of what remains.
    for (module, fn), names in HOT_PATHS.items():
        tree = ast.parse((RUNTIME / module).read_text())
        used = {
            n.attr
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.name == fn
            for n in ast.walk(f)
            if isinstance(n, ast.Attribute)
        }
        assert names <= used, f"{module}:{fn} no longer touches {sorted(names - used)}"
