"""loom.cluster — NATS under Loom: durable delivery on JetStream and, later, several
``loom serve`` nodes acting as one (:class:`ClusterTransport`, ``docs/cluster.md``).

It implements the runtime's seams (it imports ``loom.runtime``, never ``loom.bridge`` or the
SDK); ``loom serve`` (sdk/cli) composes it with the bridge.

The engine: :func:`open_nats` starts a supervised ``nats-server`` child
(:class:`EmbeddedNats`) or reaches an existing server, and holds the server's one
:class:`NatsConnection`; :class:`NatsEngine` says where NATS is and whether durability is
available (``--nats off``: it is not, and :meth:`NatsEngine.require_durable` raises
:class:`~loom.runtime.DurabilityUnavailable`).

The cluster: :class:`ClusterDirectory` shares a node's agents with every node on the same
NATS (a JetStream KV bucket) and shows theirs in its runtime's directory as remote agents,
whose capabilities :class:`ClusterCalls` calls over NATS (``docs/cluster.md``).
"""

from __future__ import annotations

from loom.runtime.lowlevel import set_public_module as _set_public_module

from ._calls import ClusterCalls as ClusterCalls
from ._connection import ConnectionState as ConnectionState
from ._connection import NatsConnection as NatsConnection
from ._connection import NatsSettings as NatsSettings
from ._connection import redact_url as redact_url
from ._directory import ClusterDirectory as ClusterDirectory
from ._directory import DirectoryStats as DirectoryStats
from ._embedded import EmbeddedNats as EmbeddedNats
from ._embedded import find_nats_server as find_nats_server
from ._engine import NatsEngine as NatsEngine
from ._engine import NatsMode as NatsMode
from ._engine import NatsStatus as NatsStatus
from ._engine import open_nats as open_nats
from ._engine import parse_nats as parse_nats
from ._errors import JetStreamUnavailable as JetStreamUnavailable
from ._errors import NatsConnectFailed as NatsConnectFailed
from ._errors import NatsError as NatsError
from ._errors import NatsServerFailed as NatsServerFailed
from ._errors import NatsServerNotFound as NatsServerNotFound
from ._jetstream import JetStreamLog as JetStreamLog
from ._transport import ClusterStats as ClusterStats
from ._transport import ClusterTransport as ClusterTransport
from ._transport import PeerStats as PeerStats

__all__ = [
    "ClusterCalls",
    "ClusterDirectory",
    "ClusterStats",
    "ClusterTransport",
    "ConnectionState",
    "DirectoryStats",
    "EmbeddedNats",
    "JetStreamLog",
    "JetStreamUnavailable",
    "NatsConnectFailed",
    "NatsConnection",
    "NatsEngine",
    "NatsError",
    "NatsMode",
    "NatsServerFailed",
    "NatsServerNotFound",
    "NatsSettings",
    "NatsStatus",
    "PeerStats",
    "find_nats_server",
    "open_nats",
    "parse_nats",
    "redact_url",
]

_set_public_module(globals())
