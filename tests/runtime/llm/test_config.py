"""``[llm.<name>]`` tables, ``LOOM_LLM_*`` overrides, and the Secret wrapper."""

from __future__ import annotations

import tomllib

import pytest

from loom.runtime import InvalidArgument
from loom.runtime.llm import LLMConfigError, Secret, load_llm_config

TOML = """
[llm]
order = ["local", "claude"]

[llm.local]
kind = "openai"
base_url = "http://127.0.0.1:11434/v1"
model = "qwen2.5:7b"
locality = "local"
typical_latency_s = 0.4

[llm.claude]
kind = "anthropic"
model = "claude-sonnet-4-5"
api_key_env = "ANTHROPIC_KEY_FOR_LOOM"
cost_per_1k_input = 0.003
cost_per_1k_output = 0.015
"""
KEY = "sk-ant-secret-value-123"


def table(text: str = TOML) -> dict[str, object]:
    llm = tomllib.loads(text)["llm"]
    assert isinstance(llm, dict)
    return llm


def test_decodes_tables_and_reads_the_key_from_the_given_environment() -> None:
    config = load_llm_config(table(), environ={"ANTHROPIC_KEY_FOR_LOOM": KEY})
    assert config.order == ("local", "claude")
    local, claude = config.providers["local"], config.providers["claude"]
    assert local.kind == "openai"
    assert local.locality == "local"
    assert local.profile.typical_latency_s == 0.4
    assert not local.api_key
    assert claude.api_key.reveal() == KEY
    assert claude.profile.cost_per_1k_output == 0.015
    assert claude.locality == "remote"


def test_environment_overrides_and_defines_providers() -> None:
    environ = {
        "ANTHROPIC_KEY_FOR_LOOM": KEY,
        "LOOM_LLM_LOCAL_MODEL": "llama3.2",
        "LOOM_LLM_LOCAL_TIMEOUT_S": "12.5",
        "LOOM_LLM_LOCAL_SUPPORTS_TOOLS": "false",
        "LOOM_LLM_MY_VLLM_KIND": "openai",
        "LOOM_LLM_MY_VLLM_MODEL": "mistral",
        "LOOM_LLM_MY_VLLM_API_KEY_ENV": "VLLM_KEY",
        "VLLM_KEY": "vk",
        "LOOM_LLM_ORDER": "my_vllm,local",
    }
    config = load_llm_config(table(), environ=environ)
    local = config.providers["local"]
    assert local.model == "llama3.2"
    assert local.timeout_s == 12.5
    assert local.supports_tools is False
    vllm = config.providers["my_vllm"]
    assert (vllm.kind, vllm.model, vllm.api_key.reveal()) == ("openai", "mistral", "vk")
    assert config.order == ("my_vllm", "local")


def test_default_order_is_table_order() -> None:
    text = TOML.replace('order = ["local", "claude"]', "")
    config = load_llm_config(table(text), environ={"ANTHROPIC_KEY_FOR_LOOM": KEY})
    assert config.order == ("local", "claude")


@pytest.mark.parametrize(
    ("text", "environ", "match"),
    [
        (TOML, {}, "ANTHROPIC_KEY_FOR_LOOM"),
        (TOML.replace('"qwen2.5:7b"', '""'), {"ANTHROPIC_KEY_FOR_LOOM": KEY}, "model"),
        (
            TOML.replace('kind = "openai"', 'kind = "cohere"'),
            {"ANTHROPIC_KEY_FOR_LOOM": KEY},
            "kind",
        ),
        (TOML + '\n[llm.x]\nkind = "openai"\nmodel = "m"\napi_key = "sk-1"\n', {}, "api_key_env"),
        (TOML.replace("locality", "localty"), {"ANTHROPIC_KEY_FOR_LOOM": KEY}, "localty"),
        (
            TOML.replace('"local", "claude"', '"local", "nope"'),
            {"ANTHROPIC_KEY_FOR_LOOM": KEY},
            "nope",
        ),
        (TOML.replace("0.4", "-1"), {"ANTHROPIC_KEY_FOR_LOOM": KEY}, "typical_latency_s"),
    ],
)
def test_bad_config_is_a_typed_error(text: str, environ: dict[str, str], match: str) -> None:
    with pytest.raises(LLMConfigError, match=match) as caught:
        load_llm_config(table(text), environ=environ)
    assert isinstance(caught.value, InvalidArgument)
    assert "sk-1" not in str(caught.value)


def test_bad_env_value_is_a_typed_error() -> None:
    environ = {"ANTHROPIC_KEY_FOR_LOOM": KEY, "LOOM_LLM_LOCAL_MAX_RETRIES": "many"}
    with pytest.raises(LLMConfigError, match="max_retries"):
        load_llm_config(table(), environ=environ)


def test_secret_hides_itself() -> None:
    secret = Secret(KEY)
    assert repr(secret) == str(secret) == f"{secret}" == "'***'"
    assert secret.reveal() == KEY
    assert secret == Secret(KEY)
    assert secret != Secret("other")
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(secret)
