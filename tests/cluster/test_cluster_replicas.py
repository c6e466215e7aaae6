"""How many copies a stream gets on a NATS cluster that has just formed: JetStream may refuse
three for a moment because a server is not yet seen online ("no suitable peers for
placement, peer offline"); that is asked again, not taken for a cluster too small for three
(soak: a node's start fell back to one copy and then exited 1, "stream name already in use
with a different configuration", when the three-copy create had gone through after all).
A real 3-server NATS cluster; the refusals are JetStream's own answer, replayed."""

from __future__ import annotations

from pathlib import Path

import anyio
import nats
import nats.js.errors
import pytest

from loom.cluster._replicas import with_replicas

from ._e2e_support import nats_cluster

pytestmark = pytest.mark.anyio

OFFLINE = "no suitable peers for placement, peer offline"


async def test_a_placement_refused_for_a_server_offline_is_asked_again(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with nats_cluster(tmp_path) as cluster:
            client = await nats.connect(cluster.servers[0].url)
            try:
                asked: list[int] = []

                async def make(replicas: int) -> int:
                    asked.append(replicas)
                    if len(asked) <= 2:  # the meta leader has not seen a server yet
                        raise nats.js.errors.BadRequestError(
                            code=400, err_code=10005, description=OFFLINE
                        )
                    return replicas

                assert await with_replicas(client, "a stream", make) == 3
                assert asked == [3, 3, 3]

                async def too_small(replicas: int) -> int:
                    if replicas > 1:  # no server offline: the cluster cannot hold three
                        raise nats.js.errors.BadRequestError(
                            code=400, err_code=10005, description="no suitable peers for placement"
                        )
                    return replicas

                assert await with_replicas(client, "a stream", too_small) == 1
            finally:
                await client.close()
