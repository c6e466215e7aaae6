"""loom.cluster — NATS under Loom: durable delivery on JetStream and, later, several
``loom serve`` nodes acting as one.

It implements the runtime's seams (it imports ``loom.runtime``, never ``loom.bridge`` or the
SDK); ``loom serve`` (sdk/cli) composes it with the bridge.
"""

from __future__ import annotations

__all__: list[str] = []
