"""The cluster lines of ``loom status`` (``docs/cluster.md``, "Watching a node")."""

from __future__ import annotations

from loom.bridge import ClusterStatus

__all__ = ["cluster_lines"]


def cluster_lines(c: ClusterStatus | None) -> list[tuple[str, str]]:
    """What a cluster node's transport has done, in three lines (none for a server that is
    no cluster node, or for a tenant's token)."""
    if c is None:
        return []
    peers = ", ".join(
        f"{p.node} ({p.patterns} patterns"
        + (f", {p.unacked_frames} frames unacked" if p.unacked_frames else "")
        + ")"
        for p in c.peers
    )
    # A silent node (its NATS server hangs, or it died) is named with what is held for it;
    # lossless events given up are said only once there are some.
    silent = (
        f"; silent: {', '.join(c.silent)} ({c.held_events} lossless events held)"
        if c.silent
        else ""
    )
    dropped = f", {c.lossless_dropped} lossless given up" if c.lossless_dropped else ""
    return [
        (
            "cluster",
            f"node {c.node}; peers: {peers or 'none'}{silent}; NATS reconnects {c.reconnects}",
        ),
        (
            "cluster out",
            f"{c.sent_lossless_events} lossless, {c.sent_realtime_events} realtime events sent; "
            f"{c.retransmitted_frames} frames sent again, {c.unacked_frames} unacknowledged, "
            f"{c.realtime_send_failed} realtime not sent{dropped}",
        ),
        (
            "cluster in",
            f"{c.received_lossless_events} lossless, {c.received_realtime_events} realtime "
            f"events received; {c.realtime_lost} realtime lost on the way, "
            f"{c.duplicate_frames} duplicate frames dropped",
        ),
    ]
