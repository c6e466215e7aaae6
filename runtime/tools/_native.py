"""The native tools, assembled: what a runtime registers for its agents by default."""

from __future__ import annotations

import os
from collections.abc import Iterable

from ._fs import FsList, FsRead, FsWrite
from ._http import HttpFetch
from ._shell import ShellExec
from ._tool import Tool
from ._workspace import Workspace

__all__ = ["native_tools"]


def native_tools(
    workspace: Workspace | str | os.PathLike[str],
    *,
    shell: bool = True,
    shell_allow: Iterable[str] | None = None,
    http_allow: Iterable[str] | None = None,
    http_allow_private: bool = False,
) -> list[Tool]:
    """The native tools confined to ``workspace``, ready for :meth:`ToolRegistry.register`.

    ``fs.read``, ``fs.write`` and ``fs.list`` always; ``shell.exec`` unless ``shell`` is
    false; ``http.fetch`` only when ``http_allow`` names hosts. Each tool has its own caps
    (see their classes); build them directly to change those.

    Args:
        workspace: the root the file and shell tools are confined to.
        shell: include ``shell.exec``.
        shell_allow: the programs ``shell.exec`` may run (``None``: the default text tools).
        http_allow: hosts ``http.fetch`` may reach (``None``: no ``http.fetch``).
        http_allow_private: let those host names resolve to non-public addresses.
    """
    root = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    tools: list[Tool] = [FsRead(root), FsWrite(root), FsList(root)]
    if shell:
        tools.append(ShellExec(root, allow=shell_allow))
    if http_allow is not None:
        tools.append(HttpFetch(allow_hosts=http_allow, allow_private=http_allow_private))
    return tools
