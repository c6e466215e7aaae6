"""One owner per piece of state: the mailbox, the bus, the agent cell and the remote agent touch
each other only through what each offers, never through another object's private members.

A private member is a name with one leading underscore; ``self._x`` and ``cls._x`` are the
object's own business. Anything else (``sub._buf``, ``self._bus._draining``,
``runtime._cells``) is one module writing or reading state that another owns.
"""

from __future__ import annotations

import ast
from collections.abc import Set as AbstractSet
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"

CHECKED = ("_bus.py", "_cell.py", "_subscription.py", "_remote.py", "_context.py")

# The exceptions, by module: the class whose private members that module may touch on any
# instance, not only on ``self``, and why.
OWNERS: dict[str, tuple[str, str]] = {
    # The module that owns the mailbox state. Its fast paths (fan_out, take, put_waiting...)
    # are functions, not methods, so Subscription's public face stays the user's; fan_out
    # works on every subscription of a route in one call, because a call per subscriber would
    # cost the bus about a tenth of its fan-out rate.
    "_subscription.py": ("Subscription", "owner of the mailbox state"),
}


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


def foreign_private_accesses(source: str, allowed: AbstractSet[str] = frozenset()) -> list[str]:
    """``line: expression`` for every private member reached on something other than
    ``self``/``cls`` (names in ``allowed`` excepted)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
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
    assert foreign_private_accesses(source, allowed) == [], (
        f"runtime/{module} reaches into another object's private members; go through what "
        "its owner offers (or, if this module owns that state, say so in OWNERS)"
    )


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
