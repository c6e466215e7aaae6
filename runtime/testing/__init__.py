"""loom.runtime.testing: test harness shipped as library code (in progress)."""

__all__: list[str] = []
