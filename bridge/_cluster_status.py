"""A cluster node's event transport in ``loom status`` (``ServerStatus.cluster``).

The bridge does not import the cluster: it reads the transport's statistics through
:class:`ClusterInfo`, a Protocol it owns and ``loom.cluster.ClusterStats`` satisfies (as
:class:`~loom.bridge.NatsInfo` is ``loom.cluster.NatsStatus``'s shape). Pure conversion to
the wire (``loom.v1.ClusterStatus``) and back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from loom.bridge._generated import cluster_status_pb2

__all__ = [
    "ClusterInfo",
    "ClusterPeerInfo",
    "ClusterPeerStatus",
    "ClusterStatus",
    "cluster_status_from_proto",
    "cluster_status_to_proto",
]


class ClusterPeerInfo(Protocol):
    """Another node as the transport sees it (``loom.cluster.PeerStats``)."""

    @property
    def node(self) -> str: ...
    @property
    def patterns(self) -> int: ...
    @property
    def unacked_frames(self) -> int: ...
    @property
    def queued_events(self) -> int: ...


class ClusterInfo(Protocol):
    """A node's transport statistics (``loom.cluster.ClusterStats``)."""

    @property
    def node(self) -> str: ...
    @property
    def links(self) -> Sequence[ClusterPeerInfo]: ...
    @property
    def sent_lossless_events(self) -> int: ...
    @property
    def sent_realtime_events(self) -> int: ...
    @property
    def received_lossless_events(self) -> int: ...
    @property
    def received_realtime_events(self) -> int: ...
    @property
    def realtime_lost(self) -> int: ...
    @property
    def realtime_send_failed(self) -> int: ...
    @property
    def retransmitted_frames(self) -> int: ...
    @property
    def duplicate_frames(self) -> int: ...
    @property
    def unacked_frames(self) -> int: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def silent(self) -> Sequence[str]: ...
    @property
    def held_events(self) -> int: ...
    @property
    def lossless_dropped(self) -> int: ...


class ClusterPeerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Another node, read off the wire (:attr:`ClusterStatus.peers`).

    Attributes:
        node: its name.
        patterns: the ``(pattern, tier)`` pairs its subscriptions hold.
        unacked_frames: lossless frames sent to it and not yet acknowledged.
        queued_events: events batched for it and not yet sent.
    """

    node: str
    patterns: int = 0
    unacked_frames: int = 0
    queued_events: int = 0


class ClusterStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A node's event transport to the other nodes (:attr:`ServerStatus.cluster`).

    Attributes:
        node: this node's name.
        peers: each other node alive.
        sent_lossless_events: Batched/Background events put on the wire (once per node).
        sent_realtime_events: Realtime events put on the wire.
        received_lossless_events: Batched/Background events from other nodes delivered here.
        received_realtime_events: Realtime events from other nodes delivered here.
        realtime_lost: Realtime events sent here that never arrived (counted here).
        realtime_send_failed: Realtime events not handed to NATS (its buffer full).
        retransmitted_frames: lossless frames sent again for want of an acknowledgement.
        duplicate_frames: lossless frames received again and dropped.
        unacked_frames: lossless frames in flight, over all peers.
        reconnects: times the NATS connection came back.
        silent: the other nodes silent past their expiry whose links are held (not in
            ``peers``).
        held_events: lossless events held now for the silent nodes.
        lossless_dropped: lossless events given up since start (for a node dropped).
    """

    node: str
    peers: tuple[ClusterPeerStatus, ...] = ()
    sent_lossless_events: int = 0
    sent_realtime_events: int = 0
    received_lossless_events: int = 0
    received_realtime_events: int = 0
    realtime_lost: int = 0
    realtime_send_failed: int = 0
    retransmitted_frames: int = 0
    duplicate_frames: int = 0
    unacked_frames: int = 0
    reconnects: int = 0
    silent: tuple[str, ...] = ()
    held_events: int = 0
    lossless_dropped: int = 0


def cluster_status_to_proto(info: ClusterInfo) -> cluster_status_pb2.ClusterStatus:
    """``info`` on the wire."""
    return cluster_status_pb2.ClusterStatus(
        node=info.node,
        peers=[
            cluster_status_pb2.ClusterPeer(
                node=p.node,
                patterns=p.patterns,
                unacked_frames=p.unacked_frames,
                queued_events=p.queued_events,
            )
            for p in info.links
        ],
        sent_lossless_events=info.sent_lossless_events,
        sent_realtime_events=info.sent_realtime_events,
        received_lossless_events=info.received_lossless_events,
        received_realtime_events=info.received_realtime_events,
        realtime_lost=info.realtime_lost,
        realtime_send_failed=info.realtime_send_failed,
        retransmitted_frames=info.retransmitted_frames,
        duplicate_frames=info.duplicate_frames,
        unacked_frames=info.unacked_frames,
        reconnects=info.reconnects,
        silent=list(info.silent),
        held_events=info.held_events,
        lossless_dropped=info.lossless_dropped,
    )


def cluster_status_from_proto(msg: cluster_status_pb2.ClusterStatus) -> ClusterStatus:
    """A node's transport statistics read off the wire."""
    return ClusterStatus(
        node=msg.node,
        peers=tuple(
            ClusterPeerStatus(
                node=p.node,
                patterns=p.patterns,
                unacked_frames=p.unacked_frames,
                queued_events=p.queued_events,
            )
            for p in msg.peers
        ),
        sent_lossless_events=msg.sent_lossless_events,
        sent_realtime_events=msg.sent_realtime_events,
        received_lossless_events=msg.received_lossless_events,
        received_realtime_events=msg.received_realtime_events,
        realtime_lost=msg.realtime_lost,
        realtime_send_failed=msg.realtime_send_failed,
        retransmitted_frames=msg.retransmitted_frames,
        duplicate_frames=msg.duplicate_frames,
        unacked_frames=msg.unacked_frames,
        reconnects=msg.reconnects,
        silent=tuple(msg.silent),
        held_events=msg.held_events,
        lossless_dropped=msg.lossless_dropped,
    )
