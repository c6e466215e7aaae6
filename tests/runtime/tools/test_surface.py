"""The public surface of loom.runtime.tools and its error tree."""

from __future__ import annotations

import inspect

import loom.runtime.tools as tools_pkg
from loom.runtime import LoomError
from loom.runtime.tools import (
    InvalidToolArguments,
    ToolError,
    ToolFailed,
    ToolNotFound,
    ToolPermissionDenied,
    ToolTimeout,
)


def test_public_surface_matches_all() -> None:
    exported = {
        name
        for name in dir(tools_pkg)
        if not name.startswith("_") and not inspect.ismodule(getattr(tools_pkg, name))
    }
    # The MCP names load on first use (a module __getattr__ over _LAZY).
    exported |= set(tools_pkg._LAZY)
    assert exported == set(tools_pkg.__all__)
    for name in tools_pkg.__all__:
        assert getattr(tools_pkg, name) is not None


def test_error_tree() -> None:
    for cls in (InvalidToolArguments, ToolTimeout, ToolPermissionDenied, ToolFailed, ToolNotFound):
        assert issubclass(cls, ToolError)
        assert issubclass(cls, LoomError)
