"""``ServerStatus.cluster``: a node's transport statistics to the wire and back (the bridge
reads ``loom.cluster.ClusterStats`` through its own ``ClusterInfo`` Protocol)."""

from __future__ import annotations

from loom.bridge import ClusterPeerStatus, ClusterStatus
from loom.bridge._cluster_status import cluster_status_from_proto, cluster_status_to_proto
from loom.bridge._generated import server_pb2
from loom.bridge._server_status import server_status_from_proto
from loom.cli._cluster_status import cluster_lines
from loom.cluster import ClusterStats, PeerStats


def test_cluster_statistics_round_trip_through_the_wire() -> None:
    stats = ClusterStats(
        node="a",
        peers=("b",),
        sent_events=7,
        sent_frames=3,
        retransmitted_frames=1,
        unacked_frames=2,
        received_events=9,
        duplicate_frames=4,
        realtime_lost=5,
        realtime_send_failed=6,
        sent_lossless_events=4,
        sent_realtime_events=3,
        received_lossless_events=8,
        received_realtime_events=1,
        links=(PeerStats(node="b", patterns=3, unacked_frames=2, queued_events=1),),
        reconnects=2,
        silent=("c",),
        held_events=600,
        lossless_dropped=256,
    )
    assert cluster_status_from_proto(cluster_status_to_proto(stats)) == ClusterStatus(
        node="a",
        peers=(ClusterPeerStatus(node="b", patterns=3, unacked_frames=2, queued_events=1),),
        sent_lossless_events=4,
        sent_realtime_events=3,
        received_lossless_events=8,
        received_realtime_events=1,
        realtime_lost=5,
        realtime_send_failed=6,
        retransmitted_frames=1,
        duplicate_frames=4,
        unacked_frames=2,
        reconnects=2,
        silent=("c",),
        held_events=600,
        lossless_dropped=256,
    )


def test_a_server_without_a_cluster_reports_none() -> None:
    status = server_status_from_proto(server_pb2.ServerStatus(version="x"))
    assert status.cluster is None


def test_loom_status_names_a_silent_node_and_what_was_given_up() -> None:
    calm = ClusterStatus(node="a", peers=(ClusterPeerStatus(node="b", patterns=2),))
    lines = dict(cluster_lines(calm))
    assert lines["cluster"] == "node a; peers: b (2 patterns); NATS reconnects 0"
    assert "silent" not in lines["cluster"]
    assert "given up" not in lines["cluster out"]

    hung = ClusterStatus(node="a", silent=("c",), held_events=600, lossless_dropped=256)
    lines = dict(cluster_lines(hung))
    assert lines["cluster"] == (
        "node a; peers: none; silent: c (600 lossless events held); NATS reconnects 0"
    )
    assert lines["cluster out"].endswith(", 0 realtime not sent, 256 lossless given up")
