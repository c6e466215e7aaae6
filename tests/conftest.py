"""Shared fixtures. Tests are anyio tests; runtime tests may also run on trio."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Default backend: asyncio. Backend-neutral test modules add
    ``pytestmark = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])``."""
    return "asyncio"
