"""The errors of the HTTP side of ``loom serve``."""

from __future__ import annotations

from loom.runtime import LoomError

__all__ = ["HttpBindError", "WebError"]


class WebError(LoomError):
    """Something went wrong with the HTTP port."""


class HttpBindError(WebError, OSError):
    """The HTTP port could not listen on its address (in use, not local, no permission)."""
