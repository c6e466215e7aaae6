"""loom.runtime.tools (in progress)."""

__all__: list[str] = []
