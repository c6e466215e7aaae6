"""``[approvals]`` of ``loom.toml``, and the approval policies ``loom serve`` gives its tools.

```toml
[approvals]
timeout_s = 3600        # a call nobody decides is denied after this long

[tools.fs]
root = "."
approval = "always"     # fs.write waits for a human ("never": it does not)

[agents.writer]
approval = { "fs.write" = "never", "shell.exec" = "always" }
```

``fs.write`` and ``shell.exec`` (the native tools that change things) wait for approval by
default when the server listens beyond loopback (its ``host`` or ``http`` address), and not on
loopback; their table's ``approval`` says otherwise. ``docs/guardrails.md``, "Human approval".
"""

from __future__ import annotations

from typing import Any

import msgspec

from loom.bridge import is_loopback
from loom.runtime import ApprovalPolicy, ConfigError

from ._hosted import ToolsTable

__all__ = ["ApprovalsTable", "decode_approvals", "tool_policies"]


class ApprovalsTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[approvals]``: how long a call waits for a decision before it is denied."""

    timeout_s: float = 3600.0


def decode_approvals(table: Any, *, where: str) -> ApprovalsTable:
    """``[approvals]`` of ``loom.toml``.

    Raises:
        ConfigError: an unknown key, a wrong type, or a timeout that is not positive.
    """
    try:
        approvals = msgspec.convert(table, ApprovalsTable)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).partition(" - at `$")
        raise ConfigError(
            f"{where} [approvals{at.rstrip('`')}]: {message.replace('`', '')}"
        ) from None
    if not approvals.timeout_s > 0:
        raise ConfigError(f"{where} [approvals] timeout_s: must be > 0, not {approvals.timeout_s}")
    return approvals


def tool_policies(tools: ToolsTable, *, hosts: tuple[str, ...]) -> dict[str, ApprovalPolicy]:
    """The approval policy of ``fs.write`` and ``shell.exec``: their table's ``approval``,
    else ``always`` when any of ``hosts`` (where the server listens) is beyond loopback."""
    exposed = any(not is_loopback(h) for h in hosts)
    default: ApprovalPolicy = "always" if exposed else "never"
    policies: dict[str, ApprovalPolicy] = {}
    if tools.fs is not None and tools.fs.write:
        policies["fs.write"] = tools.fs.approval or default
    if tools.shell is not None:
        policies["shell.exec"] = tools.shell.approval or default
    return policies
