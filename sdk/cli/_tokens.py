"""``[tokens.<name>]`` of ``loom.toml``: the tenant tokens of ``loom serve``.

Each table names an environment variable that holds the token and the namespace the token
confines its holders to::

    [tokens.alpha]
    token_env = "LOOM_TOKEN_ALPHA"
    namespace = "team-a"

The token itself never sits in the file; it is read here, by the CLI, from the environment
it is handed (nothing below the CLI reads the environment).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from loom.bridge import Tenant, validate_namespace
from loom.runtime import ConfigError, InvalidArgument

__all__ = ["decode_tokens"]


class _TokenTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    token_env: str
    namespace: str


def decode_tokens(table: Any, *, where: str, environ: Mapping[str, str]) -> tuple[Tenant, ...]:
    """The tenant tokens of ``[tokens]``, their values read from ``environ``.

    Raises:
        ConfigError: a table is malformed, its variable unset or empty, its namespace not
            a valid one, or two tables share a token (several tokens may share a namespace:
            rotate one without cutting off the others). The message names the
            table and the variable, never a token.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{where} [tokens]: must be a table of [tokens.<name>] tables")
    tenants: list[Tenant] = []
    by_token: dict[str, str] = {}
    for name, fields in table.items():
        at = f"{where} [tokens.{name}]"
        try:
            entry = msgspec.convert(fields, _TokenTable)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{at}: {exc}") from None
        try:
            validate_namespace(entry.namespace)
        except InvalidArgument as exc:
            raise ConfigError(f"{at}: {exc}") from None
        token = environ.get(entry.token_env, "")
        if not token:
            raise ConfigError(
                f"{at}: ${entry.token_env} is unset or empty: set it to the tenant's token"
            )
        if token in by_token:
            raise ConfigError(
                f"{at}: ${entry.token_env} holds the same token as [tokens.{by_token[token]}]"
            )
        by_token[token] = name
        tenants.append(Tenant(name=name, token=token, namespace=entry.namespace))
    return tuple(tenants)
