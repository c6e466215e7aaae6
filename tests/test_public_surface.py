"""Every public package's ``__all__`` is exactly what it exports, and every name resolves."""

from __future__ import annotations
import __future__

import importlib
import inspect
import pkgutil

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
