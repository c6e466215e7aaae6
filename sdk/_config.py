"""One configuration object, built from ``loom.toml``, ``LOOM_*`` environment variables and
command-line flags (later sources win), and handed down. Nothing below the CLI reads
``os.environ`` or ``sys.argv``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from loom.runtime import InvalidArgument

__all__ = ["ConfigError", "ServeConfig", "load_config"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(InvalidArgument):
    """The configuration is invalid: names the source and the key."""


class ServeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What ``loom serve`` runs with.

    Attributes:
        host: address to bind; loopback by default.
        port: TCP port; 0 picks a free one.
        data_dir: where durable state lives (created if missing).
        log_level: debug, info, warning or error.
        drain_grace_s: seconds a shutdown waits for queued events to drain.
    """

    host: str = "127.0.0.1"
    port: int = 50051
    data_dir: str = ".loom"
    log_level: str = "info"
    drain_grace_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, not {self.port}")
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
        if self.drain_grace_s < 0:
            raise ConfigError(f"drain_grace_s must be >= 0, not {self.drain_grace_s}")


_ENV = {
    "LOOM_HOST": "host",
    "LOOM_PORT": "port",
    "LOOM_DATA_DIR": "data_dir",
    "LOOM_LOG_LEVEL": "log_level",
    "LOOM_DRAIN_GRACE": "drain_grace_s",
}


def load_config(
    *,
    toml_path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
) -> ServeConfig:
    """Merge ``[serve]`` of ``loom.toml``, then ``LOOM_*`` variables, then flag ``overrides``.

    A missing ``toml_path`` is fine when it is the default one; ``None`` skips the file.

    Raises:
        ConfigError: a value has the wrong type or range, or the TOML is malformed; the
            message names where the value came from.
    """
    merged: dict[str, Any] = {}
    source = "defaults"
    if toml_path is not None and toml_path.exists():
        source = str(toml_path)
        try:
            doc = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{toml_path}: {exc}") from exc
        serve = doc.get("serve", {})
        if not isinstance(serve, dict):
            raise ConfigError(f"{toml_path}: [serve] must be a table")
        merged.update(serve)
    for var, key in _ENV.items():
        if var in environ:
            merged[key] = environ[var]
            source = f"{source}, ${var}"
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        # str values from the environment are converted ("50051" -> 50051) by strict=False.
        return msgspec.convert(merged, ServeConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"configuration ({source}): {exc}") from exc
