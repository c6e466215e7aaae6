"""``loom.bridge``: the gRPC bridge (the ``loom.v1`` wire). Built in the bridge issue."""

__all__: list[str] = []
