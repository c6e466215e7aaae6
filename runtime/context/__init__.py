"""loom.runtime.context (in progress)."""

__all__: list[str] = []
