"""The cluster's directory and calls between nodes, in one process: two or three nodes (each
a runtime and a NATS connection of its own) on a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import msgspec
import nats
import nats.js.errors
import pytest
from nats.aio.client import Client

from loom import Agent, CognitiveAgent, capability
from loom.cli._config import load_config
from loom.cluster import ClusterDirectory
from loom.cluster._directory_wire import agent_key
from loom.runtime import (
    AgentExists,
    AgentRuntime,
    AgentStatus,
    Budget,
    ConfigError,
    EventBus,
    InvalidArgument,
)
from loom.runtime.cognition import TurnOutcome
from loom.runtime.collab import request
from loom.runtime.llm import OpenAIProvider, ProviderConfig
from loom.runtime.lowlevel import RemoteTool
from loom.runtime.testing import Reply, ScriptedLLMServer, ScriptedToolCall
from loom.runtime.tools import InvalidToolArguments, JSONObject, ToolFailed, ToolNotFound

from ..sdk._budget_agents import Calls, relay
from .conftest import NatsServerProcess

pytestmark = pytest.mark.anyio

HEARTBEAT = 0.4


class Node:
    def __init__(
        self, name: str, runtime: AgentRuntime, cluster: ClusterDirectory, client: Client
    ) -> None:
        self.name = name
        self.runtime = runtime
        self.cluster = cluster
        self.client = client


@asynccontextmanager
async def node(
    url: str | list[str], name: str, *, heartbeat_s: float = HEARTBEAT
) -> AsyncIterator[Node]:
    client = await nats.connect(url, name=name)
    try:
        async with (
            EventBus() as bus,
            AgentRuntime(bus, node=name) as runtime,
            ClusterDirectory(runtime, client, name, heartbeat_s=heartbeat_s) as cluster,
        ):
            yield Node(name, runtime, cluster, client)
    finally:
        await client.close()


async def wait_until(check: Callable[[], bool], timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while not check():  # noqa: ASYNC110  (lists and several directories: no one event)
            await anyio.sleep(0.02)


started: list[str] = []
cancelled: list[str] = []


@capability("text.upper")
async def upper(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@capability("work.slow")
async def slow(tag: str) -> str:
    """Wait long; say when cancelled."""
    started.append(tag)
    try:
        await anyio.sleep(60)
    except anyio.get_cancelled_exc_class():
        cancelled.append(tag)
        raise
    return tag


@capability("work.fail")
async def fail(why: str) -> str:
    """Raise."""
    raise RuntimeError(why)


async def test_agents_of_every_node_are_in_each_directory_and_callable(
    nats_server: NatsServerProcess,
) -> None:
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            await a.runtime.start(Agent("caller"))
            await b.runtime.start(Agent("upperer", topics=["jobs.*"], capabilities=[upper]))
            await wait_until(lambda: "upperer" in a.runtime.directory)
            await wait_until(lambda: bool(a.runtime.directory.by_capability("text.upper")))
            seen = a.runtime.directory.get("upperer")
            assert seen is not None
            assert (seen.node, seen.remote, seen.status) == ("b", True, AgentStatus.RUNNING)
            assert "jobs.*" in seen.patterns
            assert [i.id for i in a.runtime.directory.by_capability("text.upper")] == ["upperer"]
            await wait_until(lambda: "caller" in b.runtime.directory)
            mine = a.runtime.directory.get("caller")
            assert mine is not None
            assert (mine.node, mine.remote) == ("a", False)

            assert await a.runtime.call_tool("text.upper", {"text": "hi"}) == "HI"
            with pytest.raises(InvalidToolArguments):
                await a.runtime.call_tool("text.upper", {"txt": "hi"})
            with pytest.raises(ToolNotFound):
                await a.runtime.call_tool("text.lower", {"text": "hi"})

            # An id live on another node is refused, atomically, in process and remote alike.
            with pytest.raises(AgentExists, match="already exists"):
                await a.runtime.attach_remote("upperer")
            with pytest.raises(AgentExists, match="live on node b"):
                await a.runtime.start(Agent("upperer"))

            # A clean stop: the agent leaves the other node's directory at once.
            await b.runtime.delete("upperer")
            await wait_until(lambda: "upperer" not in a.runtime.directory, timeout=2)


async def test_one_claim_of_an_id_wins_across_nodes(nats_server: NatsServerProcess) -> None:
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            outcomes: dict[str, str] = {}

            async def claim(n: Node) -> None:
                try:
                    await n.cluster.claim("contested")
                    outcomes[n.name] = "won"
                except AgentExists as exc:
                    outcomes[n.name] = str(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(claim, a)
                tg.start_soon(claim, b)
            assert sorted(outcomes.values())[-1] == "won"
            loser = next(v for v in outcomes.values() if v != "won")
            assert "live on node" in loser
            # The claim alone refuses the id, shown here yet or not.
            await b.cluster.claim("fresh")
            with pytest.raises(AgentExists, match="live on node b"):
                await a.cluster.claim("fresh")
            with pytest.raises(InvalidArgument, match="already exists"):
                await a.runtime.start(Agent("fresh"))


async def test_a_failure_crosses_as_its_own_kind(nats_server: NatsServerProcess) -> None:
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            await b.runtime.start(Agent("failer", capabilities=[fail]))
            await wait_until(lambda: bool(a.runtime.directory.by_capability("work.fail")))
            with pytest.raises(ToolFailed) as info:
                await a.runtime.call_tool("work.fail", {"why": "asked to"})
            assert (info.value.cause_type, info.value.cause_message) == (
                "RuntimeError",
                "asked to",
            )


async def test_a_caller_that_gives_up_cancels_the_remote_call(
    nats_server: NatsServerProcess,
) -> None:
    started.clear()
    cancelled.clear()
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            await b.runtime.start(Agent("sleeper", capabilities=[slow]))
            await wait_until(lambda: bool(a.runtime.directory.by_capability("work.slow")))
            # Cancelled with no deadline: only the cancel message tells node b.
            async with anyio.create_task_group() as tg:
                tg.start_soon(a.runtime.call_tool, "work.slow", {"tag": "cancel"})
                await wait_until(lambda: started == ["cancel"])
                tg.cancel_scope.cancel()
            await wait_until(lambda: cancelled == ["cancel"], timeout=2)
            # A deadline: it travels, and node b stops when the caller does.
            with pytest.raises(Exception, match="timed out"):
                await a.runtime.call_tool("work.slow", {"tag": "deadline"}, timeout=0.3)
            await wait_until(lambda: cancelled == ["cancel", "deadline"], timeout=2)


async def test_least_busy_spans_nodes(nats_server: NatsServerProcess) -> None:
    started.clear()
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            await a.runtime.start(Agent("slow-a", capabilities=[slow]))
            await b.runtime.start(Agent("slow-b", capabilities=[slow]))
            await wait_until(lambda: len(a.runtime.directory.by_capability("work.slow")) == 2)
            async with anyio.create_task_group() as tg:
                tg.start_soon(a.runtime.call_tool, "work.slow", {"tag": "1"})
                await wait_until(lambda: len(started) == 1)
                tg.start_soon(a.runtime.call_tool, "work.slow", {"tag": "2"})
                await wait_until(lambda: len(started) == 2)
                # One on each node: the second went to the idle one, on the other node.
                busy = {i.id: i.in_flight for i in a.runtime.directory.by_capability("work.slow")}
                assert busy == {"slow-a": 1, "slow-b": 1}
                tg.cancel_scope.cancel()


async def test_a_silent_node_leaves_and_its_calls_fail_at_once(
    nats_server: NatsServerProcess,
) -> None:
    started.clear()
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, AsyncExitStack() as stack:
            b = await stack.enter_async_context(node(nats_server.url, "b"))
            await b.runtime.start(Agent("sleeper", capabilities=[slow]))
            await wait_until(lambda: bool(a.runtime.directory.by_capability("work.slow")))
            failure: list[BaseException] = []

            async def call() -> None:
                try:
                    await a.runtime.call_tool("work.slow", {"tag": "x"})
                except ToolFailed as exc:
                    failure.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await wait_until(lambda: started == ["x"])
                # Node b falls silent as if cut off: its heartbeats stop, nothing is said.
                await b.client.close()
                gone_at = anyio.current_time()
                await wait_until(lambda: "sleeper" not in a.runtime.directory, timeout=5)
                left = anyio.current_time() - gone_at
                await wait_until(lambda: bool(failure), timeout=1)
            assert left <= 2 * HEARTBEAT + 0.2, left
            assert isinstance(failure[0], ToolFailed)
            assert failure[0].cause_type == "AGENT_DISCONNECTED"


async def test_a_call_waits_for_an_agent_reconnecting_to_its_node(
    nats_server: NatsServerProcess,
) -> None:
    async def invoke(name: str, arguments: JSONObject) -> object:
        return f"{name}: {arguments['text']}"

    def tools() -> list[RemoteTool]:
        schema: JSONObject = {"type": "object", "properties": {"text": {"type": "string"}}}
        return [RemoteTool("text.say", "Say it.", schema, invoke)]

    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            remote = await b.runtime.attach_remote("sayer")
            remote.declare_tools(tools())
            await wait_until(lambda: bool(a.runtime.directory.by_capability("text.say")))
            assert await a.runtime.call_tool("text.say", {"text": "1"}) == "text.say: 1"
            await remote.detach("stream ended")
            await wait_until(
                lambda: (
                    getattr(a.runtime.directory.get("sayer"), "status", None)
                    is AgentStatus.DISCONNECTED
                )
            )
            result: list[object] = []

            async def call() -> None:
                result.append(await a.runtime.call_tool("text.say", {"text": "2"}, timeout=10))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await anyio.sleep(0.2)
                assert result == []  # waiting, not ToolNotFound
                again = await b.runtime.attach_remote("sayer")
                again.declare_tools(tools())
            assert result == ["text.say: 2"]


def test_the_heartbeat_interval_is_a_setting() -> None:
    config = load_config(toml_path=None, environ={"LOOM_CLUSTER_HEARTBEAT": "0.5"}, overrides={})
    assert config.cluster_heartbeat_s == 0.5
    with pytest.raises(ConfigError, match="cluster_heartbeat_s"):
        load_config(toml_path=None, environ={}, overrides={"cluster_heartbeat_s": 0})


def test_the_hold_of_a_silent_nodes_link_is_a_setting(tmp_path: Path) -> None:
    config = load_config(toml_path=None, environ={}, overrides={})
    assert (config.cluster_hold_s, config.cluster_hold_bytes) == (30.0, 16 * 1024 * 1024)
    environ = {"LOOM_CLUSTER_HOLD": "120", "LOOM_CLUSTER_HOLD_BYTES": "1048576"}
    config = load_config(toml_path=None, environ=environ, overrides={})
    assert (config.cluster_hold_s, config.cluster_hold_bytes) == (120.0, 1048576)
    toml = tmp_path / "loom.toml"
    toml.write_text("[serve]\ncluster_hold_s = 0\n")
    assert load_config(toml_path=toml, environ={}, overrides={}).cluster_hold_s == 0
    # A bad value is named with where it came from.
    with pytest.raises(ConfigError, match=r"LOOM_CLUSTER_HOLD.*0\.\.3600"):
        load_config(toml_path=None, environ={"LOOM_CLUSTER_HOLD": "-1"}, overrides={})
    with pytest.raises(ConfigError, match="cluster_hold_bytes"):
        load_config(toml_path=None, environ={}, overrides={"cluster_hold_bytes": -1})


async def test_an_agents_key_that_lapsed_is_written_again(nats_server: NatsServerProcess) -> None:
    # As after a node's NATS outage longer than the bucket's age limit.
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            await a.runtime.start(Agent("upperer", capabilities=[upper]))
            await wait_until(lambda: "upperer" in b.runtime.directory)
            kv = await a.client.jetstream().key_value("loom_directory")
            await kv.purge(agent_key("upperer"))

            async def written_again() -> bool:
                try:
                    entry = await kv.get(agent_key("upperer"))
                except nats.js.errors.KeyNotFoundError:
                    return False
                return bool(entry.value)  # the purge's marker reads as not found

            # A lapsed key is no departure while its node lives: the agent stays shown on b
            # all along, and a writes its key again.
            with anyio.fail_after(5):
                while not await written_again():
                    assert "upperer" in b.runtime.directory
                    await anyio.sleep(0.02)
            await anyio.sleep(3 * HEARTBEAT)  # past the sweep's verdict on a lapse (2 intervals)
            assert "upperer" in b.runtime.directory
            assert await b.runtime.call_tool("text.upper", {"text": "back"}) == "BACK"


async def test_another_nodes_agent_says_its_lifecycle_on_its_own_node_only(
    nats_server: NatsServerProcess,
) -> None:
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            seen_on_a = a.runtime.bus.subscribe("loom.lifecycle.>")
            seen_on_b = b.runtime.bus.subscribe("loom.lifecycle.>")
            await b.runtime.start(Agent("upperer", capabilities=[upper]))
            await wait_until(lambda: "upperer" in a.runtime.directory)
            await b.runtime.delete("upperer")
            await wait_until(lambda: "upperer" not in a.runtime.directory)
            # Node b said created, running, stopping, stopped; node a (which the cluster's
            # event transport would tell) said nothing of its own.
            assert seen_on_b.statistics().queued >= 2
            assert seen_on_a.statistics().queued == 0


async def test_a_restarted_node_removes_what_its_earlier_run_left(
    nats_server: NatsServerProcess,
) -> None:
    with anyio.fail_after(30):
        async with node(nats_server.url, "a", heartbeat_s=2.0) as first:
            await first.runtime.start(Agent("ghost", capabilities=[upper]))
            await first.client.close()  # killed: nothing is taken out of the bucket
        async with node(nats_server.url, "a", heartbeat_s=2.0) as again:
            assert "ghost" not in again.runtime.directory
            async with node(nats_server.url, "c", heartbeat_s=2.0) as c:
                # Within the bucket's age limit (6 s), yet not shown: the key is gone.
                assert "ghost" not in c.runtime.directory
                assert c.cluster.statistics().nodes == 2


async def test_a_turns_depth_cap_holds_across_nodes(nats_server: NatsServerProcess) -> None:
    # origin (node a) -> hop.b (node b) -> hop.c (node a) -> hop.d (node b): with a depth cap
    # of 2 the third hop is refused, on whichever node it would run, and crosses back typed.
    calls = Calls()
    with anyio.fail_after(60):
        async with (
            node(nats_server.url, "a") as a,
            node(nats_server.url, "b") as b,
            ScriptedLLMServer() as server,
        ):
            config = ProviderConfig(
                kind="openai", model="m", base_url=server.openai_base_url, timeout_s=5.0
            )
            async with OpenAIProvider("scripted", config) as llm:
                await b.runtime.start(relay("rb", "hop.b", "hop.c", calls))
                await a.runtime.start(relay("rc", "hop.c", "hop.d", calls))
                await b.runtime.start(relay("rd", "hop.d", None, calls))
                for seen, cap in ((a, "hop.b"), (a, "hop.d"), (b, "hop.c")):
                    await wait_until(
                        lambda s=seen, c=cap: bool(s.runtime.directory.by_capability(c))  # type: ignore[misc]
                    )
                server.push(
                    Reply(tool_calls=[ScriptedToolCall(name="hop_b", arguments={})]),
                    Reply(text="done"),
                )
                origin = CognitiveAgent(
                    "origin", llm=llm, use_capabilities=["hop.b"], budget=Budget(max_call_depth=2)
                )
                await a.runtime.start(origin)
                async with a.runtime.bus.subscribe(origin.stream_topic) as stream:
                    await request(a.runtime.bus, "agent.origin.replies", b"go", timeout=30)
                    async for delivery in stream:
                        if delivery.event.type == "turn.end":
                            outcome = msgspec.json.decode(delivery.event.payload, type=TurnOutcome)
                            break
    # origin -> b is depth 1, b -> c (back on node a) depth 2; c -> d would be 3: refused.
    assert calls.count == {"hop.b": 1, "hop.c": 1}
    [result] = outcome.tool_results
    assert result.is_error
    assert result.error_type == "CallDepthExceeded"
    assert "call depth 3 is deeper than max_call_depth (2)" in result.content
