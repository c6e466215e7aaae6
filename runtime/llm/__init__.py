"""loom.runtime.llm (in progress)."""

__all__: list[str] = []
