"""The directory's bucket falling silent for longer than its age limit (its replicas electing
a leader after the server leading them died): the new leader marks every key nobody wrote
meanwhile as aged out, live nodes' too. That is no death: the nodes and agents stay in every
directory, their keys are written again, and an id whose key lapsed can be claimed. Real
nats-server processes (a 3-server JetStream cluster) and in-process nodes."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import nats
import nats.js.errors
import pytest

from loom import Agent
from loom.cluster._directory import BUCKET
from loom.cluster._directory_wire import agent_key

from ._e2e_support import nats_cluster
from .conftest import NatsServerProcess
from .test_cluster_directory import HEARTBEAT, node, upper, wait_until

pytestmark = pytest.mark.anyio


async def test_an_election_longer_than_the_age_limit_loses_no_live_node_nor_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom.cluster")
    with anyio.fail_after(90):
        async with AsyncExitStack() as stack:
            nats_servers = await stack.enter_async_context(nats_cluster(tmp_path))
            # Both nodes on one server, which must not lead the bucket (a node on a server
            # that hangs is cut off: silent, so dead to the others, rightly).
            home = nats_servers.servers[0]
            a = await stack.enter_async_context(node(home.url, "a"))
            b = await stack.enter_async_context(node(home.url, "b"))
            stream = f"KV_{BUCKET}"
            while (leader := await nats_servers.leader_of(stream)) is home:
                await a.client.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"")
                await nats_servers.wait_streams(stream)
            await b.runtime.start(Agent("upperer", capabilities=[upper]))
            await wait_until(lambda: bool(a.runtime.directory.by_capability("text.upper")))
            missing: list[str] = []

            async def watch() -> None:  # every moment a's view lacks b or its agent
                while True:
                    if "b" not in a.cluster.peers.nodes():
                        missing.append("node b")
                    if not a.runtime.directory.by_capability("text.upper"):
                        missing.append("upperer")
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                # The server leading the bucket's replicas hangs (SIGSTOP), then dies: every
                # write to the bucket goes unanswered until the other two have elected a
                # new leader, which takes seconds, well past the bucket's age limit (three
                # intervals), and the new leader marks every key nobody wrote as aged out.
                leader.pause()
                killed = anyio.current_time()
                stack.callback(leader.kill)
                # The bucket speaks again (a write stored after the election), and then some:
                # long enough for any verdict the markers or the silence could bring.
                await wait_until(lambda: a.cluster._watch.heard > killed + 1.0, timeout=60)
                await anyio.sleep(6 * HEARTBEAT)
                tg.cancel_scope.cancel()
            assert not missing, sorted(set(missing))
            assert "is gone" not in caplog.text
            assert " left" not in caplog.text
            assert await a.runtime.call_tool("text.upper", {"text": "hi"}) == "HI"
            # b wrote its agent's key again: a node starting now sees it.
            c = await stack.enter_async_context(node(home.url, "c"))
            await wait_until(lambda: bool(c.runtime.directory.by_capability("text.upper")))


async def test_an_id_whose_key_aged_out_is_claimed(nats_server: NatsServerProcess) -> None:
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a:
            # What a node killed a moment ago left: its agent's key, written no more.
            client = await nats.connect(nats_server.url)
            try:
                kv = await client.jetstream().key_value(BUCKET)
                gone = b'{"id": "orphan", "node": "z", "status": "running", "heartbeat_ms": 1}'
                await kv.create(agent_key("orphan"), gone)

                async def marked() -> bool:  # the key aged out: the server's marker holds it
                    try:
                        return not (await kv.get(agent_key("orphan"))).value
                    except nats.js.errors.KeyNotFoundError:
                        return False

                with anyio.fail_after(10):
                    while not await marked():  # noqa: ASYNC110  (a key read: no event to wait on)
                        await anyio.sleep(0.02)
            finally:
                await client.close()
            # Before, the marker was read as a record (an empty one) and the claim raised.
            await a.cluster.claim("orphan")
            await a.runtime.start(Agent("orphan"))
            assert "orphan" in a.runtime.directory
