"""The ``loom.cluster.*`` metrics of a cluster node (``docs/observability.md``,
``docs/cluster.md``): what its event transport to the other nodes has done, read from
``ClusterTransport.statistics()`` in the snapshot :mod:`loom._metrics` takes on the loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from loom.cluster import ClusterStats

if TYPE_CHECKING:
    from opentelemetry.metrics import Observation

__all__ = ["cluster_instruments"]

_Instrument = Callable[..., None]


def cluster_instruments(
    counter: _Instrument, gauge: _Instrument, snapshot: Callable[[], ClusterStats | None]
) -> None:
    """Register the cluster's instruments; each reads ``snapshot()`` (``None``: no cluster
    node, so no series)."""
    from opentelemetry.metrics import Observation

    def read(
        pick: Callable[[ClusterStats], Iterable[Observation]],
    ) -> Callable[[], Iterable[Observation]]:
        def observe() -> Iterable[Observation]:
            stats = snapshot()
            return () if stats is None else pick(stats)

        return observe

    counter(
        "loom.cluster.events",
        read(
            lambda c: [
                Observation(c.sent_lossless_events, {"direction": "sent", "tier": "lossless"}),
                Observation(c.sent_realtime_events, {"direction": "sent", "tier": "realtime"}),
                Observation(
                    c.received_lossless_events, {"direction": "received", "tier": "lossless"}
                ),
                Observation(
                    c.received_realtime_events, {"direction": "received", "tier": "realtime"}
                ),
            ]
        ),
        description="Events between this node and the others, by direction and tier",
    )
    counter(
        "loom.cluster.realtime.lost",
        read(lambda c: [Observation(c.realtime_lost)]),
        description="Realtime events other nodes sent here that never arrived (counted here)",
    )
    counter(
        "loom.cluster.realtime.unsent",
        read(lambda c: [Observation(c.realtime_send_failed)]),
        description="Realtime events not handed to NATS (its buffer full while disconnected)",
    )
    counter(
        "loom.cluster.frames",
        read(
            lambda c: [
                Observation(c.sent_frames, {"kind": "sent"}),
                Observation(c.retransmitted_frames, {"kind": "retransmitted"}),
                Observation(c.duplicate_frames, {"kind": "duplicate"}),
            ]
        ),
        description="Frames sent, sent again (no acknowledgement in time), received twice",
    )
    counter(
        "loom.cluster.lossless.dropped",
        read(lambda c: [Observation(c.lossless_dropped)]),
        description="Lossless events given up with a node dropped (left, restarted, or "
        "silent past its hold)",
    )
    counter(
        "loom.cluster.reconnects",
        read(lambda c: [Observation(c.reconnects)]),
        description="Times this node's NATS connection came back after it was lost",
    )
    gauge(
        "loom.cluster.peers",
        read(lambda c: [Observation(len(c.links))]),
        description="Other nodes alive, as this node sees them",
    )
    gauge(
        "loom.cluster.held_events",
        read(lambda c: [Observation(c.held_events)]),
        description="Lossless events held for silent nodes, sent if they are heard again",
    )
    gauge(
        "loom.cluster.remote_patterns",
        read(lambda c: [Observation(p.patterns, {"node": p.node}) for p in c.links]),
        description="Subscription patterns each other node holds (its interest), by node",
    )
    gauge(
        "loom.cluster.unacked_frames",
        read(lambda c: [Observation(p.unacked_frames, {"node": p.node}) for p in c.links]),
        description="Lossless frames sent to each other node and not yet acknowledged",
    )
