"""The exception tree: one class per meaning, with the builtins its meaning implies."""

from __future__ import annotations

import pytest

from loom.runtime import AgentExists, ConfigError, InvalidArgument, LoomError
from loom.runtime.llm import LLMConfigError, LLMError
from loom.runtime.tools import McpConfigError


@pytest.mark.parametrize("kind", [LLMConfigError, McpConfigError])
def test_every_config_error_is_a_config_error(kind: type[Exception]) -> None:
    assert issubclass(kind, ConfigError)


def test_a_config_error_is_a_bad_value() -> None:
    assert issubclass(ConfigError, InvalidArgument)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, LoomError)
    assert issubclass(LLMConfigError, LLMError)  # still caught with the provider errors


def test_a_taken_agent_id_is_one_class() -> None:
    exc = AgentExists("a1", "a local agent runs under that id")
    assert isinstance(exc, InvalidArgument)
    assert exc.agent_id == "a1"
    assert str(exc) == "agent 'a1' already exists: a local agent runs under that id"
