"""Every public package's ``__all__`` is exactly what it exports, and every name resolves."""

from __future__ import annotations
import __future__

import importlib
import inspect
import pickle
import pkgutil

import msgspec
import pytest

import loom

PUBLIC_PACKAGES = sorted(
    {"loom"}
    | {
        info.name
        for info in pkgutil.walk_packages(loom.__path__, prefix="loom.")
        if not any(part.startswith("_") for part in info.name.split("."))
        and info.name != "loom.cli"
    }
)


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_all_matches_exports(name: str) -> None:
    module = importlib.import_module(name)
    declared = getattr(module, "__all__", None)
    assert declared is not None, f"{name} has no __all__"
    assert len(declared) == len(set(declared)), f"{name}.__all__ repeats a name"
    for attr in declared:
        assert hasattr(module, attr), f"{name}.__all__ names {attr!r}, which does not exist"
    exported = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not inspect.ismodule(value)
        and not isinstance(value, __future__._Feature)
    }
    # Names a package loads on first use (a module __getattr__ over its _LAZY table).
    exported |= set(getattr(module, "_LAZY", ()))
    assert exported == set(declared), (
        f"{name}: exported but not in __all__: {sorted(exported - set(declared))}; "
        f"in __all__ but not exported: {sorted(set(declared) - exported)}"
    )


def test_the_packages_are_found() -> None:
    assert {"loom", "loom.runtime", "loom.bridge"} <= set(PUBLIC_PACKAGES)


def _exports() -> dict[int, tuple[object, list[str]]]:
    """Every class and function a public module exports, with the modules exporting it."""
    found: dict[int, tuple[object, list[str]]] = {}
    for name in [*PUBLIC_PACKAGES, "loom.cli"]:
        module = importlib.import_module(name)
        for attr in module.__all__:
            value = getattr(module, attr)
            if inspect.isclass(value) or inspect.isfunction(value):
                found.setdefault(id(value), (value, []))[1].append(name)
    return found


def _within(inner: str, outer: str) -> bool:
    return inner.startswith(outer + ".")


def test_public_names_show_their_public_module() -> None:
    # As anyio does: loom.runtime.tools.ToolNotFound, not loom.runtime.tools._errors.ToolNotFound;
    # of the public modules exporting a name, the most specific one (loom.runtime.Context, not
    # loom.Context; loom.runtime.collab.BarrierAborted, not loom.runtime.BarrierAborted).
    wrong = []
    for value, exporters in _exports().values():
        shown = value.__module__
        qualname = f"{shown}.{value.__qualname__}"  # type: ignore[attr-defined]
        if shown not in exporters:
            wrong.append(f"{qualname}: not among its exporters {exporters}")
        elif any(_within(other, shown) for other in exporters):
            wrong.append(f"{qualname}: a more specific module exports it too: {exporters}")
    assert not wrong, "\n".join(wrong)


def test_the_public_path_is_the_real_one() -> None:
    # Pickle finds a class or function by __module__ and __qualname__: the path must resolve.
    for value, _ in _exports().values():
        assert pickle.loads(pickle.dumps(value)) is value


def test_structs_resolve_their_fields_from_the_public_path() -> None:
    # msgspec resolves a Struct's (string) annotations in the module __module__ names; moving
    # __module__ to the public package must leave every exported Struct usable.
    structs = [
        value
        for value, _ in _exports().values()
        if isinstance(value, type) and issubclass(value, msgspec.Struct)
    ]
    assert len(structs) > 20
    for struct in structs:
        for field in msgspec.structs.fields(struct):  # resolves each annotation, or raises
            assert not isinstance(field.type, str), (struct, field)


def test_examples_of_the_public_path() -> None:
    from loom.runtime import BarrierAborted, Context, Event
    from loom.runtime.lowlevel import Transport
    from loom.runtime.tools import McpHub, ToolNotFound

    assert ToolNotFound.__module__ == "loom.runtime.tools"
    assert repr(ToolNotFound) == "<class 'loom.runtime.tools.ToolNotFound'>"
    assert BarrierAborted.__module__ == "loom.runtime.collab"
    assert (loom.Context, Context.__module__) == (Context, "loom.runtime")
    assert loom.Agent.__module__ == "loom"
    assert Transport.__module__ == "loom.runtime.lowlevel"
    assert McpHub.__module__ == "loom.runtime.tools"  # loaded lazily, placed as it loads
    event = Event(type="t", payload=b"p")
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(event), type=Event) == event
    error = pickle.loads(pickle.dumps(ToolNotFound("fs.nope")))
    assert (type(error), str(error)) == (ToolNotFound, str(ToolNotFound("fs.nope")))
