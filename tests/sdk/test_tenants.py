"""Tenants (issue 13, section 3) with real processes: a real ``loom serve`` whose ``loom.toml``
defines two tenant tokens and an admin token, an SDK agent process of each tenant, and the
``loom`` CLI with each token. Each tenant tries to read, call, impersonate and list the other:
every attempt is refused with ``PERMISSION_DENIED`` and a message naming the namespace (or
filtered, for a listing), while its own traffic flows; the admin token sees both."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import grpc
import grpc.aio
import pytest

from loom.bridge._generated import bridge_pb2, bridge_pb2_grpc, tools_pb2, tools_pb2_grpc
from loom.cli._config import load_tables
from loom.runtime import ConfigError

from ._cli_support import PYTHON, Running, clean_env, loom, loom_serve, running_argv

pytestmark = pytest.mark.anyio

AGENT = str(Path(__file__).with_name("_tenant_agent.py"))

TOML = """
[tokens.alpha]
token_env = "TEST_TOKEN_ALPHA"
namespace = "team-a"

[tokens.beta]
token_env = "TEST_TOKEN_BETA"
namespace = "team-b"
"""


@dataclass
class Cluster:
    address: str
    server: Running
    tokens: dict[str, str]  # namespace (or "admin") -> token
    cwd: Path

    async def cli(
        self, who: str, *args: str, timeout: float = 30
    ) -> subprocess.CompletedProcess[bytes]:
        """``loom *args`` against the server with ``who``'s token."""
        env = clean_env(LOOM_TOKEN=self.tokens[who])
        return await loom(*args, "--address", self.address, cwd=self.cwd, env=env, timeout=timeout)


@asynccontextmanager
async def tenants_server(tmp_path: Path, *extra: str) -> AsyncIterator[Cluster]:
    tokens = {
        "team-a": secrets.token_urlsafe(24),
        "team-b": secrets.token_urlsafe(24),
        "admin": secrets.token_urlsafe(24),
    }
    (tmp_path / "loom.toml").write_text(TOML)
    env = clean_env(
        TEST_TOKEN_ALPHA=tokens["team-a"],
        TEST_TOKEN_BETA=tokens["team-b"],
        LOOM_ADMIN_TOKEN=tokens["admin"],
    )
    async with loom_serve(tmp_path, *extra, env=env) as (server, address):
        yield Cluster(address, server, tokens, tmp_path)


@asynccontextmanager
async def tenant_agent(
    cluster: Cluster, ns: str, other: str, mode: str = ""
) -> AsyncIterator[Running]:
    """``_tenant_agent.py``: an agent of ``ns`` with ``ns``'s token, probing ``other``."""
    env = clean_env(TENANT_TOKEN=cluster.tokens[ns])
    argv = [*PYTHON, AGENT, cluster.address, ns, other, *([mode] if mode else [])]
    async with running_argv(argv, cwd=cluster.cwd, env=env) as agent:
        yield agent


async def _probed(agent: Running) -> dict[str, str]:
    """The agent's ``probe``/``own`` lines, once it printed them all: what -> outcome."""
    await agent.wait_for(r"^probed$", timeout=60)
    lines = [line.split(": ", 1) for line in agent.lines if line.startswith(("probe ", "own "))]
    return {line[0]: line[1] for line in lines}


def _denied(result: subprocess.CompletedProcess[bytes], namespace: str) -> str:
    """The CLI's refusal: a failed command whose message says the namespace confines it."""
    err = result.stderr.decode()
    assert result.returncode != 0, result.stdout.decode()
    assert f"of namespace {namespace!r}" in err, err
    assert "outside its namespace" in err, err
    return err


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_two_tenants_cannot_read_call_or_impersonate_each_other(tmp_path: Path) -> None:
    with anyio.fail_after(180):
        async with (
            tenants_server(tmp_path) as cluster,
            tenant_agent(cluster, "team-a", "team-b", "durable") as agent_a,
            tenant_agent(cluster, "team-b", "team-a", "durable") as agent_b,
        ):
            for agent, ns, other in ((agent_a, "team-a", "team-b"), (agent_b, "team-b", "team-a")):
                seen = await _probed(agent)
                # From an SDK agent's stream: reading, publishing into, acting as and calling
                # the other namespace are refused, each naming the namespace.
                for what in (
                    "probe subscribe-other",
                    "probe subscribe-mailbox",
                    "probe subscribe-all",
                    "probe publish-other",
                    "probe publish-as-other",
                ):
                    assert seen[what].startswith("refused PERMISSION_DENIED"), (what, seen)
                assert f"cannot publish as '{other}:worker'" in seen["probe publish-as-other"]
                assert "outside its namespace" in seen["probe subscribe-other"]
                assert "ToolPermissionDenied" in seen["probe tool-other"], seen
                assert f"may not call tool '{other}.upper'" in seen["probe tool-other"]
                # ... while its own traffic flows: its tools (only), a call, a publish.
                assert seen["own tools"] == f"{ns}.upper"
                assert seen["own tool"] == '"MINE"'
                # Taken by the bus (nobody but the publisher itself listens there: unrouted).
                assert seen["own publish"] in ("ACCEPTED", "UNROUTED")

            # An SDK agent process of team-a that claims team-b's (live, held) agent id is
            # refused for good: it exits at once saying why, rather than waiting for the id.
            env = clean_env(TENANT_TOKEN=cluster.tokens["team-a"])
            argv = [*PYTHON, AGENT, cluster.address, "team-b", "team-a"]
            async with running_argv(argv, cwd=cluster.cwd, env=env) as impostor:
                assert await impostor.wait(timeout=30) != 0
            assert "may not act as agent 'team-b:worker'" in impostor.output, impostor.output
            assert "PERMISSION_DENIED" in impostor.output, impostor.output

            # Agent to agent inside team-a, through the context: a request and a tool call
            # flow; the same towards team-b reaches nobody.
            async with tenant_agent(cluster, "team-a", "team-b", "asker") as asker:
                seen = await _probed(asker)
            assert seen["own request"] == "PING from team-a:worker", seen
            assert seen["own tool"] == "MINE", seen
            assert seen["probe request-other"] == "RequestTimeout", seen
            assert "ToolPermissionDenied" in seen["probe ctx-tool-other"], seen
            assert agent_b.count("got team-b.jobs ping") == 0

            # The CLI with team-a's token: its own namespace works ...
            own = await cluster.cli("team-a", "call", "team-a.upper", '{"text": "hi"}')
            assert own.returncode == 0, own.stderr
            assert own.stdout.decode().strip() == '"HI"'
            sent = await cluster.cli("team-a", "publish", "team-a.jobs", "from-cli")
            assert sent.returncode == 0, sent.stderr
            await agent_a.wait_for(r"^got team-a\.jobs from-cli$")
            mine = await cluster.cli("team-a", "tail", "team-a.>", "--since", "1h", "--count", "1")
            assert mine.returncode == 0, mine.stderr
            assert "from-cli" in mine.stdout.decode() or "own" in mine.stdout.decode()
            # ... the other's is refused: read (tail, replay), call, publish, ask.
            for args in (
                ("tail", "team-b.>", "--count", "1"),
                ("tail", "team-b.>", "--since", "1h", "--count", "1"),
                ("replay", "team-b.>", "--to", "team-a.copied"),
                ("tail", "agent.team-b:worker.replies.>", "--count", "1"),
                ("tail", ">", "--count", "1"),
                ("call", "team-b.upper", '{"text": "hi"}'),
                ("publish", "team-b.jobs", "intrusion"),
                ("publish", "agent.team-b:worker.replies", "forged reply"),
            ):
                _denied(await cluster.cli("team-a", *args), "team-a")
            assert agent_b.count("intrusion") == 0
            assert agent_b.count("forged") == 0
            # loom ask reaches its own agent (its inbox inside the namespace), not the other's.
            asked = await cluster.cli("team-a", "ask", "team-a:worker", "question")
            assert asked.returncode == 0, asked.stderr
            assert "QUESTION" in asked.stdout.decode()
            refused = await cluster.cli("team-a", "ask", "team-b:worker", "question")
            assert refused.returncode != 0
            assert agent_b.count("question") == 0

            await _raw_refusals(cluster)


async def _raw_refusals(cluster: Cluster) -> None:
    """The unary entry points, as a client of team-a speaking gRPC itself."""
    meta = _metadata(cluster.tokens["team-a"])
    async with grpc.aio.insecure_channel(cluster.address) as channel:
        tools = tools_pb2_grpc.ToolServiceStub(channel)
        bridge = bridge_pb2_grpc.BridgeStub(channel)
        call = tools_pb2.ToolCall(id="c1", name="team-b.upper", arguments='{"text": "x"}')
        for method in (bridge.ForwardToolCall, tools.Call):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await method(call, metadata=meta, timeout=10)
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "may not call tool 'team-b.upper'" in (caught.value.details() or "")
        ok = await bridge.ForwardToolCall(
            tools_pb2.ToolCall(id="c2", name="team-a.upper", arguments='{"text": "x"}'),
            metadata=meta,
            timeout=10,
        )
        assert ok.output == '"X"', ok
        # Impersonation: the other's agent id, an id outside every namespace, the other's tool.
        for request in (
            bridge_pb2.AgentRegisterRequest(agent_id="team-b:worker"),
            bridge_pb2.AgentRegisterRequest(agent_id="intruder"),
            bridge_pb2.AgentRegisterRequest(
                agent_id="team-a:spy",
                tools=[tools_pb2.ToolDescriptor(name="team-b.upper", parameters_schema="{}")],
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await bridge.RegisterAgent(request, metadata=meta, timeout=10)
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED, caught.value
            assert "outside its namespace" in (caught.value.details() or "")
        # Opening the other's agent's stream (it is registered, by team-b) is refused too.
        stream = bridge.EventStream(metadata=meta, timeout=10)
        await stream.write(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id="team-b:worker")))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream.read()
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # The shared-token-less server admits no anonymous caller at all.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await tools.ListTools(tools_pb2.ListToolsRequest(), timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_listings_are_filtered_and_the_admin_sees_both(tmp_path: Path) -> None:
    with anyio.fail_after(180):
        async with (
            tenants_server(tmp_path, "--nats", "off") as cluster,
            tenant_agent(cluster, "team-a", "team-b") as agent_a,
            tenant_agent(cluster, "team-b", "team-a") as agent_b,
        ):
            await _probed(agent_a)
            await _probed(agent_b)
            for who, expected in (
                ("team-a", {"team-a"}),
                ("team-b", {"team-b"}),
                ("admin", {"team-a", "team-b"}),
            ):
                agents = await cluster.cli(who, "agents", "--json")
                assert agents.returncode == 0, agents.stderr
                ids = {json.loads(line)["id"] for line in agents.stdout.decode().splitlines()}
                assert ids == {f"{ns}:worker" for ns in expected}, (who, ids)

                tools = await cluster.cli(who, "tools", "--json")
                names = {json.loads(line)["name"] for line in tools.stdout.decode().splitlines()}
                tenant_tools = {n for n in names if n != "clock.now"}
                assert tenant_tools == {f"{ns}.upper" for ns in expected}, (who, names)
                # The server's own tools are not a tenant's.
                assert ("clock.now" in names) == (who == "admin"), (who, names)

                topics = await cluster.cli(who, "topics", "--json", "--subscriptions")
                stats = json.loads(topics.stdout)
                seen = {t["topic"] for t in stats["topics"]}
                assert {f"{ns}.jobs" for ns in expected} <= seen, (who, seen)
                assert all(any(ns in t for ns in expected) for t in seen), (who, seen)
                patterns = {p for s in stats["subscriptions"] for p in s["patterns"]}
                if who == "admin":
                    # The admin sees the server's own too: its barrier coordinator.
                    assert "loom.barrier.>" in patterns, patterns
                    patterns.discard("loom.barrier.>")
                assert all(any(ns in p for ns in expected) for p in patterns), (who, patterns)

                status = await cluster.cli(who, "status", "--json")
                record = json.loads(status.stdout)
                assert record["agents"] == len(expected), (who, record)
                assert record["namespace"] == ("" if who == "admin" else who), record
                text = (await cluster.cli(who, "status")).stdout.decode()
                assert (f"namespace:   {who} " in text) == (who != "admin"), text
                # Directory queries are filtered the same way.
                by_tool = await cluster.cli(who, "agents", "--capability", "team-b.upper", "--json")
                found = [json.loads(line)["id"] for line in by_tool.stdout.decode().splitlines()]
                assert found == ([] if who == "team-a" else ["team-b:worker"]), (who, found)


def test_tokens_table_reads_each_token_from_its_variable(tmp_path: Path) -> None:
    toml = tmp_path / "loom.toml"
    toml.write_text(TOML)
    env = {"TEST_TOKEN_ALPHA": "a" * 20, "TEST_TOKEN_BETA": "b" * 20}
    tables = load_tables(toml_path=toml, environ=env)
    assert [(t.name, t.namespace, t.token) for t in tables.tokens] == [
        ("alpha", "team-a", "a" * 20),
        ("beta", "team-b", "b" * 20),
    ]
    assert load_tables(toml_path=None, environ=env).tokens == ()


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        (TOML, {"TEST_TOKEN_ALPHA": "a" * 20}, r"\[tokens.beta\]: \$TEST_TOKEN_BETA is unset"),
        (TOML, {"TEST_TOKEN_ALPHA": "same", "TEST_TOKEN_BETA": "same"}, "same token as"),
        ('[tokens.x]\ntoken_env = "T"\nnamespace = "a.b"\n', {"T": "t"}, "invalid namespace"),
        ('[tokens.x]\ntoken_env = "T"\nnamespace = "loom"\n', {"T": "t"}, "reserved"),
        ('[tokens.x]\ntoken = "inline"\nnamespace = "n"\n', {}, r"\[tokens.x\]"),
        ('tokens = "x"\n', {}, r"\[tokens\]: must be a table"),
    ],
)
def test_tokens_table_errors_name_the_table_never_the_token(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    toml = tmp_path / "loom.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_tables(toml_path=toml, environ=environ)
    assert "same" not in str(caught.value).replace("same token", "")
