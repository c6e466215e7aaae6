"""The public surfaces of ``loom.runtime.llm`` and ``loom.runtime.testing`` match ``__all__``."""

from __future__ import annotations

import types

import pytest

import loom.runtime.llm
import loom.runtime.testing


@pytest.mark.parametrize("module", [loom.runtime.llm, loom.runtime.testing])
def test_all_matches_the_public_names(module: types.ModuleType) -> None:
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(module.__all__) == public
    for name in module.__all__:
        assert getattr(module, name) is not None
