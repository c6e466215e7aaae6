"""Configuration of LLM providers: ``[llm.<name>]`` tables of ``loom.toml`` and ``LOOM_LLM_*``.

A ``loom.toml`` holds::

    [llm]
    order = ["local", "openai"]        # the router's fallback chain (default: table order)

    [llm.local]
    kind = "openai"                    # the OpenAI chat completions wire: vLLM, Ollama, ...
    base_url = "http://127.0.0.1:11434/v1"
    model = "qwen2.5:7b"
    locality = "local"

    [llm.claude]
    kind = "anthropic"
    model = "claude-sonnet-4-5"
    api_key_env = "ANTHROPIC_API_KEY"  # the NAME of the variable; the key never goes in a file

Every field of a provider can be set or overridden from the environment as
``LOOM_LLM_<NAME>_<FIELD>`` (``LOOM_LLM_LOCAL_MODEL=llama3``), where ``<NAME>`` is the
provider's name upper-cased with non-alphanumerics as ``_``; setting ``..._KIND`` for a name
that has no table defines a new provider. The environment is always an explicit parameter:
nothing here reads ``os.environ``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from ._errors import LLMConfigError

__all__ = ["LLMConfig", "ProviderConfig", "ProviderProfile", "Secret", "load_llm_config"]

ProviderKind = Literal["openai", "anthropic"]
Locality = Literal["local", "remote"]


class Secret:
    """A string that does not show itself: ``repr`` and ``str`` are ``'***'``.

    Use :meth:`reveal` at the one place the value is needed (handing it to an SDK).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value itself. Never log or format it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling would be a way to move the key somewhere it should not be.
        raise TypeError("a Secret cannot be pickled")


_NO_SECRET = Secret("")


class ProviderProfile(msgspec.Struct, frozen=True, kw_only=True):
    """What the router knows of a provider when it chooses one.

    Attributes:
        locality: ``local`` providers run inside the trust boundary (this machine or network);
            only they may serve ``local_only`` requests.
        cost_per_1k_input: USD per 1000 prompt tokens.
        cost_per_1k_output: USD per 1000 generated tokens.
        typical_latency_s: the latency to expect for one call, for latency budgets.
        supports_tools: the provider's model calls tools natively.
        supports_streaming: the provider streams answers.
    """

    locality: Locality = "remote"
    cost_per_1k_input: float = 0.0
    cost_per_1k_output: float = 0.0
    typical_latency_s: float = 1.0
    supports_tools: bool = True
    supports_streaming: bool = True


class ProviderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One ``[llm.<name>]`` table.

    Attributes:
        kind: which wire and SDK: ``openai`` (any chat completions server) or ``anthropic``.
        model: the model name to request.
        base_url: the API root ('' for the SDK's default: OpenAI's or Anthropic's cloud).
        api_key_env: the name of the environment variable holding the key ('' for none;
            local servers usually need none).
        api_key: the key itself, read from ``api_key_env`` when the config is loaded; never
            in a file; shows as ``'***'``.
        timeout_s: the default deadline of one call, retries included (see docs/cognition.md).
        max_retries: retries after the first attempt on 429, 5xx and connection errors.
        backoff_base_s: the first backoff; it doubles per retry, with full jitter.
        backoff_max_s: the cap of one backoff.
        retry_after_max_s: the cap on how long a ``Retry-After`` may make us wait.
        max_concurrency: calls to this provider in flight at once; more wait their turn.
        max_output_tokens: ``max_tokens`` when a request sets none, on both wires (Anthropic
            requires one; an unbounded local model may write to its context limit).
        cache: keep this provider's answers in the response cache and answer an identical
            request from it (see docs/guardrails.md, "Response cache"); off by default.
        cache_ttl_s: how long a cached answer may be served, in seconds.
        cache_max_entries: the most answers of this provider the cache keeps.
        cache_max_bytes: the most bytes of this provider's answers the cache keeps.
        policy: the name of a ``[policy.<name>]`` guarding this provider's calls; it replaces
            ``max_retries``, the backoffs and ``max_concurrency`` ('' for those: the default
            policy, ``docs/guardrails.md``).
    """

    kind: ProviderKind
    model: str
    base_url: str = ""
    api_key_env: str = ""
    api_key: Secret = _NO_SECRET
    timeout_s: float = 60.0
    max_retries: int = 2
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 30.0
    max_concurrency: int = 8
    max_output_tokens: int = 4096
    policy: str = ""
    locality: Locality = "remote"
    cost_per_1k_input: float = 0.0
    cost_per_1k_output: float = 0.0
    typical_latency_s: float = 1.0
    supports_tools: bool = True
    supports_streaming: bool = True
    cache: bool = False
    cache_ttl_s: float = 86400.0
    cache_max_entries: int = 10_000
    cache_max_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if not self.model:
            raise LLMConfigError("model must not be empty")
        if self.cache_ttl_s <= 0 or self.cache_max_entries < 1 or self.cache_max_bytes < 1:
            raise LLMConfigError(
                "cache_ttl_s must be positive, cache_max_entries and cache_max_bytes at least 1"
            )
        for field in ("timeout_s", "typical_latency_s"):
            if getattr(self, field) <= 0:
                raise LLMConfigError(f"{field} must be positive")
        for field in (
            "max_retries",
            "backoff_base_s",
            "backoff_max_s",
            "retry_after_max_s",
            "cost_per_1k_input",
            "cost_per_1k_output",
        ):
            if getattr(self, field) < 0:
                raise LLMConfigError(f"{field} must not be negative")
        if self.max_concurrency < 1 or self.max_output_tokens < 1:
            raise LLMConfigError("max_concurrency and max_output_tokens must be at least 1")

    @property
    def profile(self) -> ProviderProfile:
        """The routing facts of this provider."""
        return ProviderProfile(
            locality=self.locality,
            cost_per_1k_input=self.cost_per_1k_input,
            cost_per_1k_output=self.cost_per_1k_output,
            typical_latency_s=self.typical_latency_s,
            supports_tools=self.supports_tools,
            supports_streaming=self.supports_streaming,
        )


class LLMConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The whole ``[llm]`` table.

    Attributes:
        providers: the providers by name, in table order.
        order: the router's fallback chain: the names to try, first to last.
    """

    providers: Mapping[str, ProviderConfig]
    order: tuple[str, ...] = ()


_SETTABLE = tuple(f for f in ProviderConfig.__struct_fields__ if f != "api_key")
# Longest first, so that ``..._API_KEY_ENV`` is not read as a provider named ``X_API_KEY``.
_ENV_FIELDS = sorted(_SETTABLE, key=len, reverse=True)
_ENV_PREFIX = "LOOM_LLM_"


def _env_name(provider: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", provider).upper()


def _env_tables(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``LOOM_LLM_<NAME>_<FIELD>`` variables, grouped by upper-cased ``<NAME>``."""
    tables: dict[str, dict[str, str]] = {}
    for key, value in environ.items():
        if not key.startswith(_ENV_PREFIX):
            continue
        rest = key[len(_ENV_PREFIX) :]
        for field in _ENV_FIELDS:
            suffix = "_" + field.upper()
            if rest.endswith(suffix) and len(rest) > len(suffix):
                tables.setdefault(rest[: -len(suffix)], {})[field] = value
                break
    return tables


def load_llm_config(llm_table: Mapping[str, Any], *, environ: Mapping[str, str]) -> LLMConfig:
    """Decode the ``[llm]`` table of a parsed ``loom.toml`` and apply ``LOOM_LLM_*`` overrides.

    Args:
        llm_table: the ``llm`` table as :mod:`tomllib` parsed it (``{}`` when absent).
        environ: the environment to read overrides and API keys from (the CLI passes
            ``os.environ``; tests pass a dict).

    Raises:
        LLMConfigError: a table is malformed, a field has the wrong type, the fallback order
            names an unknown provider, or ``api_key_env`` names a variable that is not set.
            The message never contains a key.
    """
    order_value = llm_table.get("order", ())
    tables: dict[str, dict[str, Any]] = {}
    for name, table in llm_table.items():
        if name == "order":
            continue
        if not isinstance(table, Mapping):
            raise LLMConfigError(f"[llm.{name}] must be a table, got {type(table).__name__}")
        if "api_key" in table:
            raise LLMConfigError(
                f"[llm.{name}]: an API key does not belong in a file; "
                "name its environment variable with api_key_env"
            )
        tables[name] = dict(table)
    by_env_name = {_env_name(name): name for name in tables}
    for env_name, overrides in _env_tables(environ).items():
        # A provider defined by the environment alone takes the lower-cased name.
        target = by_env_name.get(env_name) or env_name.lower()
        tables.setdefault(target, {}).update(overrides)

    providers: dict[str, ProviderConfig] = {}
    for name, table in tables.items():
        try:
            config = msgspec.convert(table, ProviderConfig, strict=False)
        except msgspec.ValidationError as exc:
            raise LLMConfigError(f"[llm.{name}]: {exc}") from None
        except LLMConfigError as exc:
            raise LLMConfigError(f"[llm.{name}]: {exc}") from None
        if config.api_key_env:
            key = environ.get(config.api_key_env)
            if not key:
                raise LLMConfigError(
                    f"[llm.{name}]: api_key_env names {config.api_key_env!r}, which is not set"
                )
            config = msgspec.structs.replace(config, api_key=Secret(key))
        providers[name] = config

    if isinstance(order_value, str):
        order: tuple[str, ...] = tuple(s.strip() for s in order_value.split(",") if s.strip())
    elif isinstance(order_value, list | tuple) and all(isinstance(s, str) for s in order_value):
        order = tuple(order_value)
    else:
        raise LLMConfigError("[llm] order must be a list of provider names")
    if env_order := environ.get("LOOM_LLM_ORDER"):
        order = tuple(s.strip() for s in env_order.split(",") if s.strip())
    unknown = [n for n in order if n not in providers]
    if unknown:
        raise LLMConfigError(f"[llm] order names unknown providers: {unknown}")
    return LLMConfig(providers=providers, order=order or tuple(providers))
