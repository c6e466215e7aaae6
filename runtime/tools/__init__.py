"""``loom.runtime.tools``: the ``Tool`` seam, the registry every call goes through, native tools."""

from ._errors import InvalidArguments as InvalidArguments
from ._errors import InvalidToolSchema as InvalidToolSchema
from ._errors import ToolError as ToolError
from ._errors import ToolFailed as ToolFailed
from ._errors import ToolNotFound as ToolNotFound
from ._errors import ToolPermissionDenied as ToolPermissionDenied
from ._errors import ToolTimeout as ToolTimeout
from ._function import FunctionTool as FunctionTool
from ._registry import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._registry import RegistryStats as RegistryStats
from ._registry import ToolArguments as ToolArguments
from ._registry import ToolRegistry as ToolRegistry
from ._stats import ToolFailures as ToolFailures
from ._stats import ToolSpec as ToolSpec
from ._stats import ToolStats as ToolStats
from ._tool import JSONObject as JSONObject
from ._tool import Tool as Tool

__all__ = [
    "DEFAULT_TIMEOUT",
    "FunctionTool",
    "InvalidArguments",
    "InvalidToolSchema",
    "JSONObject",
    "RegistryStats",
    "Tool",
    "ToolArguments",
    "ToolError",
    "ToolFailed",
    "ToolFailures",
    "ToolNotFound",
    "ToolPermissionDenied",
    "ToolRegistry",
    "ToolSpec",
    "ToolStats",
    "ToolTimeout",
]
