"""A node that starts before JetStream has leaders for what it needs (the durable events'
stream, the directory's bucket): the NATS cluster is restarting, and only one server of its
three is up, so no majority elects anything. The node waits, saying so, and goes on once a
majority is back; bounded, it gives up with ``JetStreamUnavailable``.

(Before: under load, a node that started while the bucket had no leader exited 1 after 5 s,
with a bare TimeoutError or JetStream's 503.)"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import nats
import pytest

from loom.cluster import ClusterDirectory, JetStreamUnavailable
from loom.runtime import AgentRuntime, EventBus

from ..sdk._cli_support import clean_env, running
from ._e2e_support import HEARTBEAT, NatsCluster, NatsNode, nats_cluster, nodes_on

pytestmark = pytest.mark.anyio


async def wait_listening(server: NatsNode) -> None:
    """Until ``server`` accepts client connections (its JetStream may still be leaderless)."""
    with anyio.fail_after(30):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", server.port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def restarted_without_majority(tmp_path: Path, nats_servers: NatsCluster) -> NatsNode:
    """The stream and the bucket made (three replicas), every server killed, and one of the
    three started again: connectable, but with no leader for either."""
    async with nodes_on(tmp_path, nats_servers, "a") as nodes:
        await nodes.wait_listed("a")  # the node is up: the stream and bucket exist
    nats_servers.kill_all()
    lone = nats_servers.servers[0]
    nats_servers.start(lone)
    await wait_listening(lone)
    return lone


async def test_a_node_waits_for_jetstream_leaders_then_starts(tmp_path: Path) -> None:
    with anyio.fail_after(180):
        async with nats_cluster(tmp_path) as nats_servers:
            lone = await restarted_without_majority(tmp_path, nats_servers)
            argv = ["serve", "--port", "0", "--data-dir", str(tmp_path / "data-b")]
            argv += ["--nats", lone.url, "--node", "b", "--cluster-heartbeat", str(HEARTBEAT)]
            async with running(*argv, cwd=tmp_path, env=clean_env()) as node:
                await node.wait_for(r"waiting up to \d+ s for JetStream to serve", timeout=30)
                # The majority comes back: leaders are elected, and the node starts.
                for server in nats_servers.servers[1:]:
                    nats_servers.start(server)
                await node.wait_for(r"listening on (\S+:\d+)", timeout=90)
                assert node.process.returncode is None, node.output
                assert "Traceback" not in node.output, node.output


async def test_a_directory_gives_up_waiting_with_a_typed_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom.nats")
    with anyio.fail_after(120):
        async with nats_cluster(tmp_path) as nats_servers:
            lone = await restarted_without_majority(tmp_path, nats_servers)
            client = await nats.connect(lone.url)
            try:
                async with EventBus() as bus, AgentRuntime(bus, node="b") as runtime:
                    directory = ClusterDirectory(
                        runtime, client, "b", heartbeat_s=HEARTBEAT, available_wait_s=1.0
                    )
                    with pytest.raises(JetStreamUnavailable) as caught:
                        async with directory:
                            pass
            finally:
                await client.close()
    message = str(caught.value)
    assert "the directory's bucket loom_directory" in message, message
    assert "a majority of its servers up" in message, message
    # Said at most once (not once per attempt); not at all when the first attempt took longer
    # than the bound (JetStream's request timeout is 5 s).
    waiting = [r.getMessage() for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(waiting) <= 1, waiting
