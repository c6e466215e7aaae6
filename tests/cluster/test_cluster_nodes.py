"""Several real ``loom serve --nats URL --node X`` processes on one real nats-server form one
Loom: SDK clients on each node publish and subscribe across them, per tier, in order, without
echo; a node that starts late learns the interest that exists; a node killed with SIGKILL has
its interest dropped; a full lossless subscriber on one node holds the publisher on another
back, and nothing is lost. Readiness is what the processes print or what a client receives,
never a sleep."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus

from loom import Agent, Context, serve_agent
from loom.bridge._client import AgentRegistration, BridgeClient, ClientOptions
from loom.bridge._reconnect import Backoff
from loom.runtime import Event, QoS

from ..sdk._cli_support import Running, loom, running
from .conftest import NatsServerProcess, start_nats_server

pytestmark = pytest.mark.anyio

OPTIONS = ClientOptions(
    connect_timeout=15.0,
    rpc_timeout=5.0,
    heartbeat_interval=0.5,
    heartbeat_timeout=5.0,
    backoff=Backoff(initial=0.05, maximum=0.5),
    close_grace=1.0,
)


@asynccontextmanager
async def loom_node(
    tmp_path: Path, nats: NatsServerProcess, name: str, *extra: str
) -> AsyncIterator[tuple[Running, str]]:
    """``loom serve --nats URL --node name`` on port 0 (with ``extra`` flags), and the
    address it listens on."""
    args = ["serve", "--port", "0", "--data-dir", str(tmp_path / f"node-{name}")]
    args += ["--nats", nats.url, "--node", name, *extra]
    async with running(*args, cwd=tmp_path) as server:
        match = await server.wait_for(r"listening on (\S+:\d+)", timeout=30)
        await server.wait_for(rf"loom serve: cluster node {name} ", timeout=5)
        yield server, match.group(1)


def client(address: str, agent_id: str, *topics: str, qos: QoS = QoS.BATCHED) -> BridgeClient:
    registration = AgentRegistration(agent_id=agent_id, topics=topics, qos=qos)
    return BridgeClient(address, registration, options=OPTIONS)


async def routed(publisher: BridgeClient, subscriber: BridgeClient, topic: str) -> None:
    """Publish probes on ``topic`` until one reaches ``subscriber``: the publisher's node has
    learnt the subscriber's node's interest. (Interest travels on its own: the first events
    after a subscription may reach only the nodes that knew of it.)"""
    with anyio.fail_after(20):
        while True:
            await publisher.publish(topic, Event(type="probe"))
            with anyio.move_on_after(0.2):
                while (await subscriber.receive()).event.type != "probe":
                    pass
                break
    # Probes still on their way are taken by `events_of`, which skips them.


async def events_of(subscriber: BridgeClient, n: int, *, timeout: float = 30) -> list[Event]:
    got: list[Event] = []
    with anyio.fail_after(timeout):
        while len(got) < n:
            event = (await subscriber.receive()).event
            if event.type != "probe":
                got.append(event)
    return got


async def test_events_cross_nodes_per_tier_in_order_without_echo(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    n = 300
    with anyio.fail_after(120):
        async with AsyncExitStack() as stack:
            (_, a), (node_b, b), (_, c) = [
                await stack.enter_async_context(loom_node(tmp_path, nats_server, name))
                for name in ("a", "b", "c")
            ]
            pub = await stack.enter_async_context(client(a, "pub"))
            near = await stack.enter_async_context(client(a, "near", "lossless.>"))
            subs = {
                "rt": await stack.enter_async_context(
                    client(b, "rt", "realtime.>", qos=QoS.REALTIME)
                ),
                "batched": await stack.enter_async_context(client(b, "batched", "lossless.>")),
                "background": await stack.enter_async_context(
                    client(c, "background", "lossless.>", qos=QoS.BACKGROUND)
                ),
            }
            await routed(pub, subs["rt"], "realtime.probe")
            await routed(pub, subs["batched"], "lossless.probe")
            await routed(pub, subs["background"], "lossless.probe")
            await events_of(near, 0)
            sent = {"realtime": [], "lossless": []}  # type: dict[str, list[str]]
            for i in range(n):
                for kind in sent:
                    event = Event(type="t", payload=b"%d" % i)
                    sent[kind].append(event.id)
                    await pub.publish(f"{kind}.{i % 5}", event)
            # Realtime drops only when a buffer overflows; none does at this pace.
            assert [e.id for e in await events_of(subs["rt"], n)] == sent["realtime"]
            assert [e.id for e in await events_of(subs["batched"], n)] == sent["lossless"]
            assert [e.id for e in await events_of(subs["background"], n)] == sent["lossless"]
            # The publisher's own node delivered each once, and nothing came back to it.
            local = [e.id for e in await events_of(near, n)]
            assert local == sent["lossless"]
            await pub.publish("lossless.end", Event(type="end"))
            end = await events_of(near, 1)
            assert end[0].type == "end"  # nothing between the last event and this one
            # `loom status` and the metrics count them, by tier, on each side.
            sent_by_a = await cluster_status(tmp_path, a)
            assert sent_by_a["node"] == "a"
            assert {p["node"] for p in sent_by_a["peers"]} == {"b", "c"}
            assert sent_by_a["sent_realtime_events"] >= n  # (and the probes)
            assert sent_by_a["sent_lossless_events"] >= 2 * n  # to b and to c
            got_by_b = await cluster_status(tmp_path, b)
            assert got_by_b["received_realtime_events"] >= n
            assert got_by_b["received_lossless_events"] >= n
            assert got_by_b["realtime_lost"] == 0
            text_status = await loom("status", "-a", b, cwd=tmp_path)
            lines = text_status.stdout.decode()
            assert "cluster:     node b; peers: a (" in lines, lines
            assert f"cluster in:  {got_by_b['received_lossless_events']} lossless" in lines, lines
            http = (await node_b.wait_for(r"dashboard on (http://\S+)/")).group(1)
            metrics = await anyio.to_thread.run_sync(read_metrics, http)
            line = 'loom_cluster_events_total{direction="received",tier="lossless"}'
            assert f"{line} {float(got_by_b['received_lossless_events'])}" in metrics
            assert "loom_cluster_peers 2.0" in metrics
            assert "loom_cluster_lossless_dropped_total 0.0" in metrics
            assert "loom_cluster_held_events 0.0" in metrics


async def cluster_status(tmp_path: Path, address: str) -> dict[str, Any]:
    """The ``cluster`` part of ``loom status --json`` on the node at ``address``."""
    done = await loom("status", "--json", "-a", address, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    cluster: dict[str, Any] = json.loads(done.stdout)["cluster"]
    return cluster


def read_metrics(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:
        text: str = answer.read().decode()
        return text


async def test_a_node_started_late_reaches_existing_subscribers_at_once(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    with anyio.fail_after(90):
        async with AsyncExitStack() as stack:
            _, a = await stack.enter_async_context(loom_node(tmp_path, nats_server, "a"))
            sub = await stack.enter_async_context(client(a, "sub", "late.>"))
            await sub.wait_connected()
            # b starts after the subscription exists, and publishes at once, with no probe:
            # it learnt a's interest while starting (its hello is answered).
            _, b = await stack.enter_async_context(loom_node(tmp_path, nats_server, "b"))
            pub = await stack.enter_async_context(client(b, "pub"))
            await pub.publish("late.x", Event(type="t", payload=b"first"))
            with anyio.fail_after(10):
                got = await sub.receive()
            assert got.event.payload == b"first"


async def test_a_node_killed_has_its_interest_dropped(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    with anyio.fail_after(90):
        async with AsyncExitStack() as stack:
            # Node a holds a silent node's link for 2 s (`--cluster-hold`; 30 by default).
            node_a, a = await stack.enter_async_context(
                loom_node(tmp_path, nats_server, "a", "--cluster-hold", "2")
            )
            node_b, b = await stack.enter_async_context(loom_node(tmp_path, nats_server, "b"))
            await node_a.wait_for("cluster: node b joined")
            pub = await stack.enter_async_context(client(a, "pub"))
            sub = await stack.enter_async_context(client(b, "sub", "gone.>"))
            await routed(pub, sub, "gone.probe")
            node_b.signal(signal.SIGKILL)  # no goodbye: only its silence tells
            await node_b.process.wait()
            # Three heartbeats (`--cluster-heartbeat`, 2 s by default) of silence: silent,
            # its link held; the hold over, it is dropped.
            await node_a.wait_for(
                r"cluster: node b silent for 6 s \(expired\); its link is held for 2 s",
                timeout=15,
            )
            for i in range(50):  # for node b: held while it is silent, then given up
                await pub.publish("gone.x", Event(type="t", payload=b"held %d" % i))
            await node_a.wait_for(
                r"cluster: node b silent for \S+ s \(past its hold\); its interest dropped"
                r" \(50 lossless events to it not delivered",
                timeout=10,
            )
            status = await loom("status", "-a", a, cwd=tmp_path)
            assert "50 lossless given up" in status.stdout.decode(), status.stdout
            # Publishing on goes on, with nobody to wait for.
            local = await stack.enter_async_context(client(a, "local", "gone.>"))
            await local.wait_connected()
            with anyio.fail_after(10):
                for i in range(100):
                    await pub.publish("gone.x", Event(type="t", payload=b"%d" % i))
                assert len(await events_of(local, 100)) == 100


async def test_a_full_subscriber_on_one_node_holds_the_publisher_on_another_back(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    n = 20_000
    with anyio.fail_after(180):
        async with AsyncExitStack() as stack:
            _, a = await stack.enter_async_context(loom_node(tmp_path, nats_server, "a"))
            _, b = await stack.enter_async_context(loom_node(tmp_path, nats_server, "b"))
            pub = await stack.enter_async_context(client(a, "pub"))
            sub = await stack.enter_async_context(client(b, "sub", "bp.>"))
            await routed(pub, sub, "bp.probe")
            sent: list[str] = []
            done = anyio.Event()

            async def publisher() -> None:
                for i in range(n):
                    event = Event(type="t", payload=b"%d" % i)
                    sent.append(event.id)
                    await pub.publish("bp.x", event, wait_accepted=i % 100 == 99)
                done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(publisher)
                # Nobody reads on b: its buffers fill, b stops acknowledging, a's window to b
                # fills, and a's bus holds the publisher (and its stream's credit) back: its
                # count stops moving (sampled a second apart, within a bound).
                last = -1
                with anyio.fail_after(60):
                    while len(sent) != last:
                        last = len(sent)
                        await anyio.sleep(1.0)  # the interval sampled, not a readiness wait
                        assert not done.is_set(), "the publisher was never held back"
                got = [e.id for e in await events_of(sub, n, timeout=120)]
            assert got == sent  # nothing dropped, in order


async def test_a_nats_restart_mid_stream_loses_no_lossless_event(tmp_path: Path) -> None:
    n = 3000
    with anyio.fail_after(180):
        async with AsyncExitStack() as stack:
            store = tmp_path / "nats"
            nats = await stack.enter_async_context(start_nats_server(store))
            _, a = await stack.enter_async_context(loom_node(tmp_path, nats, "a"))
            _, b = await stack.enter_async_context(loom_node(tmp_path, nats, "b"))
            pub = await stack.enter_async_context(client(a, "pub"))
            sub = await stack.enter_async_context(client(b, "sub", "r.>"))
            await routed(pub, sub, "r.probe")
            sent: list[str] = []
            got: list[str] = []

            async def publisher() -> None:
                for i in range(n):
                    event = Event(type="t", payload=b"%d" % i)
                    sent.append(event.id)
                    await pub.publish("r.x", event, wait_accepted=i % 50 == 49)

            async def reader() -> None:
                got.extend(e.id for e in await events_of(sub, n, timeout=150))

            async def restarted(*, task_status: TaskStatus[None]) -> None:
                async with start_nats_server(store, port=nats.port):
                    task_status.started()
                    await anyio.sleep_forever()

            async with anyio.create_task_group() as outer:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(reader)
                    tg.start_soon(publisher)
                    with anyio.fail_after(60):
                        while len(sent) < n // 5:  # noqa: ASYNC110
                            await anyio.sleep(0.01)
                    nats.kill()  # mid-stream: frames and acknowledgements in flight are lost
                    await nats.process.wait()
                    await outer.start(restarted)  # the same port: the nodes reconnect
                assert got == sent
                outer.cancel_scope.cancel()


async def test_a_durable_agent_on_one_node_gets_what_another_node_publishes(
    tmp_path: Path, nats_server: NatsServerProcess
) -> None:
    n = 200
    got: list[Event] = []
    probed = anyio.Event()
    all_in = anyio.Event()

    async def on_event(ctx: Context, topic: str, event: Event) -> None:
        if event.type == "probe":
            probed.set()
            return
        got.append(event)
        if len(got) == n:
            all_in.set()

    agent = Agent("keeper", topics=["dur.>"], on_event=on_event, durable=True)
    with anyio.fail_after(120):
        async with AsyncExitStack() as stack:
            _, a = await stack.enter_async_context(loom_node(tmp_path, nats_server, "a"))
            _, b = await stack.enter_async_context(loom_node(tmp_path, nats_server, "b"))
            pub = await stack.enter_async_context(client(a, "pub"))
            tg = await stack.enter_async_context(anyio.create_task_group())
            stop = anyio.Event()
            await tg.start(partial(serve_agent, agent, b, options=OPTIONS, stop=stop))
            # Node a stores for the durable name once JetStream told it of the name: a probe
            # that arrives proves it (one published before that is stored for nobody).
            with anyio.fail_after(30):
                while not probed.is_set():
                    await pub.publish("dur.probe", Event(type="probe"), wait_accepted=True)
                    with anyio.move_on_after(0.2):
                        await probed.wait()
            sent = []
            for i in range(n):
                event = Event(type="t", payload=b"%d" % i)
                sent.append(event.id)
                await pub.publish(f"dur.{i % 3}", event, wait_accepted=True)
            with anyio.fail_after(30):
                await all_in.wait()
            assert [e.id for e in got] == sent
            stop.set()
