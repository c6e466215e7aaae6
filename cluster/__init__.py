"""loom.cluster — NATS under Loom: durable delivery on JetStream and, later, several
``loom serve`` nodes acting as one.

It implements the runtime's seams (it imports ``loom.runtime``, never ``loom.bridge`` or the
SDK); ``loom serve`` (sdk/cli) composes it with the bridge.
"""

from __future__ import annotations

from loom.runtime.lowlevel import set_public_module as _set_public_module

from ._jetstream import JetStreamLog as JetStreamLog

__all__ = ["JetStreamLog"]

_set_public_module(globals())
