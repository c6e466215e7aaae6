"""``loom.runtime.tools``: the ``Tool`` seam, the registry every call goes through, native tools."""

import typing

from .._public import public_module as _public_module
from .._public import set_public_module as _set_public_module
from ._call_scope import CallDepthExceeded as CallDepthExceeded
from ._call_scope import ToolCallRefused as ToolCallRefused
from ._clock import ClockNow as ClockNow
from ._clock import Now as Now
from ._errors import InvalidToolArguments as InvalidToolArguments
from ._errors import InvalidToolSchema as InvalidToolSchema
from ._errors import ToolError as ToolError
from ._errors import ToolFailed as ToolFailed
from ._errors import ToolNotFound as ToolNotFound
from ._errors import ToolPermissionDenied as ToolPermissionDenied
from ._errors import ToolTimeout as ToolTimeout
from ._errors import ToolUnavailable as ToolUnavailable
from ._fs import DirEntry as DirEntry
from ._fs import DirListing as DirListing
from ._fs import FileContent as FileContent
from ._fs import FileWritten as FileWritten
from ._fs import FsList as FsList
from ._fs import FsRead as FsRead
from ._fs import FsWrite as FsWrite
from ._function import FunctionTool as FunctionTool
from ._gated import NeedsApproval as NeedsApproval
from ._gated import approval_ruled as approval_ruled
from ._gated import ruled_approval as ruled_approval
from ._http import FetchResult as FetchResult
from ._http import HttpFetch as HttpFetch
from ._journal import EffectInterrupted as EffectInterrupted
from ._journal import EffectJournal as EffectJournal
from ._journal import JournalEntry as JournalEntry
from ._journal import JournalStats as JournalStats
from ._mcp_config import McpConfigError as McpConfigError
from ._mcp_config import McpHttpConfig as McpHttpConfig
from ._mcp_config import McpServerConfig as McpServerConfig
from ._mcp_config import McpStdioConfig as McpStdioConfig
from ._mcp_config import load_mcp_config as load_mcp_config
from ._native import native_tools as native_tools
from ._output import ToolOutputSink as ToolOutputSink
from ._output import stream_tool_output as stream_tool_output
from ._output import tool_output_sink as tool_output_sink
from ._registry import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._registry import MAX_ARGUMENT_BYTES as MAX_ARGUMENT_BYTES
from ._registry import MAX_ARGUMENT_DEPTH as MAX_ARGUMENT_DEPTH
from ._registry import MAX_SCHEMA_BYTES as MAX_SCHEMA_BYTES
from ._registry import MAX_SCHEMA_DEPTH as MAX_SCHEMA_DEPTH
from ._registry import RegistryStats as RegistryStats
from ._registry import ToolArguments as ToolArguments
from ._registry import ToolRegistry as ToolRegistry
from ._scope_reserve import ScopeUnavailable as ScopeUnavailable
from ._shell import DEFAULT_SHELL_PROGRAMS as DEFAULT_SHELL_PROGRAMS
from ._shell import ExecResult as ExecResult
from ._shell import ResourceLimits as ResourceLimits
from ._shell import ShellExec as ShellExec
from ._stats import ToolFailures as ToolFailures
from ._stats import ToolSpec as ToolSpec
from ._stats import ToolStats as ToolStats
from ._tool import JSONObject as JSONObject
from ._tool import Tool as Tool
from ._tool import validates_itself as validates_itself
from ._workspace import MAX_TREE_ENTRIES as MAX_TREE_ENTRIES
from ._workspace import PathAccess as PathAccess
from ._workspace import Workspace as Workspace

if typing.TYPE_CHECKING:
    from ._mcp import McpHub as McpHub
    from ._mcp import McpHubStats as McpHubStats
    from ._mcp import McpServer as McpServer
    from ._mcp import McpServerStats as McpServerStats
    from ._mcp import McpServerStatus as McpServerStatus
    from ._mcp_tool import McpTool as McpTool

# These import the mcp SDK (~0.7 s, pydantic and an HTTP stack); they load on first use.
_LAZY = {
    "McpHub": "._mcp",
    "McpHubStats": "._mcp",
    "McpServer": "._mcp",
    "McpServerStats": "._mcp",
    "McpServerStatus": "._mcp",
    "McpTool": "._mcp_tool",
}


def __getattr__(name: str) -> typing.Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        _public_module(value, __name__)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_SHELL_PROGRAMS",
    "DEFAULT_TIMEOUT",
    "MAX_ARGUMENT_BYTES",
    "MAX_ARGUMENT_DEPTH",
    "MAX_SCHEMA_BYTES",
    "MAX_SCHEMA_DEPTH",
    "MAX_TREE_ENTRIES",
    "CallDepthExceeded",
    "ClockNow",
    "DirEntry",
    "DirListing",
    "EffectInterrupted",
    "EffectJournal",
    "ExecResult",
    "FetchResult",
    "FileContent",
    "FileWritten",
    "FsList",
    "FsRead",
    "FsWrite",
    "FunctionTool",
    "HttpFetch",
    "InvalidToolArguments",
    "InvalidToolSchema",
    "JSONObject",
    "JournalEntry",
    "JournalStats",
    "McpConfigError",
    "McpHttpConfig",
    "McpHub",
    "McpHubStats",
    "McpServer",
    "McpServerConfig",
    "McpServerStats",
    "McpServerStatus",
    "McpStdioConfig",
    "McpTool",
    "NeedsApproval",
    "Now",
    "PathAccess",
    "RegistryStats",
    "ResourceLimits",
    "ScopeUnavailable",
    "ShellExec",
    "Tool",
    "ToolArguments",
    "ToolCallRefused",
    "ToolError",
    "ToolFailed",
    "ToolFailures",
    "ToolNotFound",
    "ToolOutputSink",
    "ToolPermissionDenied",
    "ToolRegistry",
    "ToolSpec",
    "ToolStats",
    "ToolTimeout",
    "ToolUnavailable",
    "Workspace",
    "approval_ruled",
    "load_mcp_config",
    "native_tools",
    "ruled_approval",
    "stream_tool_output",
    "tool_output_sink",
    "validates_itself",
]

_set_public_module(globals())
