"""``[policy.<name>]`` and ``[tools.policy]`` of ``loom.toml``: the resilience policies of a
server and which tools they guard (``docs/guardrails.md``, "Resilience policies").

A ``loom.toml`` holds::

    [policy.flaky-api]
    timeout = "5s"                 # each attempt
    max_concurrency = 4
    retry = { policy = "exponential", duration = "200ms", max_interval = "5s", max_retries = 3 }
    circuit_breaker = { trip = "consecutiveFailures >= 5", timeout = "30s", max_requests = 1 }
    rate_limit = { rate = 10, burst = 20 }

    [llm.openai]
    policy = "flaky-api"           # replaces the provider's own retry and concurrency fields

    [tools.policy]                 # tool name pattern -> policy; the first match wins
    "github.*" = "flaky-api"

    [requests.policy]              # ctx.request's topic pattern -> policy
    "billing.*" = "flaky-api"

Each attachment gets its own live policy (``flaky-api@llm.openai``,
``flaky-api@tools:github.*``): its own breaker, bucket and slots.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from loom.runtime import ConfigError
from loom.runtime.llm import LLMConfig
from loom.runtime.resilience import Policies, PolicyConfig, PolicyConfigError, load_policies

__all__ = ["PolicyTables", "build_policies", "decode_policy_tables"]


class PolicyTables(msgspec.Struct, frozen=True, kw_only=True):
    """What ``loom.toml`` says of resilience policies.

    Attributes:
        configs: ``[policy.<name>]``, by name.
        tools: ``[tools.policy]``: tool name pattern -> policy name, in file order.
        requests: ``[requests.policy]``: request topic pattern -> policy name.
    """

    configs: Mapping[str, PolicyConfig] = msgspec.field(default_factory=dict)
    tools: Mapping[str, str] = msgspec.field(default_factory=dict)
    requests: Mapping[str, str] = msgspec.field(default_factory=dict)


def decode_policy_tables(doc: Mapping[str, Any], *, where: str) -> PolicyTables:
    """``[policy]`` and ``[tools.policy]`` of the parsed file (the caller leaves the latter
    out of ``[tools]``).

    Raises:
        ConfigError: a malformed table, or a rule naming no ``[policy.<name>]``.
    """
    table = doc.get("policy", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} [policy]: must be a table of [policy.<name>] tables")
    try:
        configs = load_policies(table)
    except PolicyConfigError as exc:
        raise ConfigError(f"{where} {exc}") from None
    tools = _rules(doc, "tools", configs, where)
    requests = _rules(doc, "requests", configs, where)
    return PolicyTables(configs=configs, tools=tools, requests=requests)


def _rules(
    doc: Mapping[str, Any], table: str, configs: Mapping[str, PolicyConfig], where: str
) -> dict[str, str]:
    outer = doc.get(table, {})
    rules = outer.get("policy", {}) if isinstance(outer, Mapping) else {}
    if not isinstance(rules, Mapping) or not all(isinstance(v, str) for v in rules.values()):
        raise ConfigError(f'{where} [{table}.policy]: a table of "<pattern>" = "<policy>"')
    if table == "requests" and set(outer) - {"policy"}:
        raise ConfigError(f"{where} [requests]: only [requests.policy] is known")
    for pattern, name in rules.items():
        if name not in configs:
            raise ConfigError(
                f"{where} [{table}.policy]: {pattern!r} names {name!r}, "
                "which no [policy.<name>] defines"
            )
    return dict(rules)


def check_llm_policies(tables: PolicyTables, llm: LLMConfig | None, *, where: str) -> None:
    """Refuse an ``[llm.<name>] policy`` that names no ``[policy.<name>]``."""
    for name, provider in (llm.providers if llm is not None else {}).items():
        if provider.policy and provider.policy not in tables.configs:
            raise ConfigError(
                f"{where} [llm.{name}]: policy = {provider.policy!r} names no [policy.<name>]"
            )


def without_policy(tools_table: Any) -> Any:
    """``[tools]`` without its ``policy`` table (decoded here, not by ``[tools]``' decoder)."""
    if isinstance(tools_table, Mapping) and "policy" in tools_table:
        return {k: v for k, v in tools_table.items() if k != "policy"}
    return tools_table


def build_policies(tables: PolicyTables) -> Policies:
    """The server's live policies: the named configurations, and one policy per
    ``[tools.policy]`` rule (the providers' are made by the model router)."""
    policies = Policies(tables.configs)
    policies.attach_tools(tables.tools)
    policies.attach_requests(tables.requests)
    return policies
