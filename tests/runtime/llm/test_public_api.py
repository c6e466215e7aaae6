"""The public surfaces of ``loom.runtime.llm`` and ``loom.runtime.testing`` match ``__all__``."""

from __future__ import annotations

import subprocess
import sys
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


def test_the_vendor_sdks_load_when_a_provider_is_made() -> None:
    # The provider classes are ordinary names of the package; what is deferred is their SDK
    # (seconds and ~100 MB to import), so a process that only imports loom never pays it.
    script = """
import sys
import loom
from loom.runtime.llm import AnthropicProvider, OpenAIProvider, ProviderConfig
assert not {"openai", "anthropic"} & set(sys.modules), "an SDK was imported with the package"
OpenAIProvider("o", ProviderConfig(kind="openai", model="m"))
AnthropicProvider("a", ProviderConfig(kind="anthropic", model="m"))
assert {"openai", "anthropic"} <= set(sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
