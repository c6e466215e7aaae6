"""``loom status``, ``tools``, ``version``, ``config``, ``tail --follow``, ``agents --all`` and
``topics --subscriptions``: against real servers (a ``loom serve`` subprocess, or an
in-process one where the test needs a short liveness window), and what each says when
something is wrong."""

from __future__ import annotations

import importlib.metadata
import io
import json
import signal
import socket
import time
from pathlib import Path

import pytest

from loom.bridge import AgentRegistration, BridgeClient
from loom.cli._commands import Connection, agents, status, topics

from ..bridge._client_support import FAST, hosting
from ..bridge._server_harness import wait_until
from ._cli_support import clean_env, loom, loom_serve, running
from .test_cli_commands import UPPER  # the agent with a capability the CLI tests share

pytestmark = pytest.mark.anyio


VERSION = importlib.metadata.version("loom-runtime")


async def test_version_and_dash_dash_version(tmp_path: Path) -> None:
    long = await loom("version", cwd=tmp_path)
    assert long.returncode == 0, long.stderr
    assert long.stdout.decode().startswith(f"loom {VERSION} (Python 3.")
    short = await loom("--version", cwd=tmp_path)
    assert short.returncode == 0, short.stderr
    assert short.stdout.decode().strip() == f"loom {VERSION}"


async def test_status_of_a_live_server(tmp_path: Path) -> None:
    async with loom_serve(tmp_path) as (_server, address):
        published = await loom("publish", "nobody.here", "x", "-a", address, cwd=tmp_path)
        assert published.returncode == 0, published.stderr
        shown = await loom("status", "-a", address, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        lines = dict(line.split(":", 1) for line in shown.stdout.decode().splitlines())
        assert lines["server"].strip() == f"{address}: serving, loom {VERSION}"
        assert "since" in lines["uptime"]
        assert lines["events"].strip() == "1 published, 0 dropped, 1 unrouted"
        assert lines["in flight"].strip() == (
            "0 deliveries to remote agents, not yet taken in (0 bytes)"
        )
        as_json = await loom("status", "--json", "-a", address, cwd=tmp_path)
        record = json.loads(as_json.stdout)
        assert record["serving"] is True
        assert record["version"] == VERSION
        assert record["published"] == 1
        assert record["uptime_s"] > 0
        assert record["stale_after_s"] == 15.0
        assert (record["in_flight"], record["in_flight_bytes"]) == (0, 0)


async def test_status_of_no_server_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket_port() as port:  # bound, never listening: refused
        result = await loom("status", "-a", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith("loom status: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


async def test_tools_lists_the_agents_capabilities_with_their_schema(tmp_path: Path) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "upperer.py").write_text(UPPER)
    async with (
        loom_serve(tmp_path) as (_server, address),
        running("run", str(folder), "-a", address, cwd=tmp_path) as run,
    ):
        await run.wait_for(r"upperer.*connected")
        listed = await loom("tools", "-a", address, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        rows = [line.split(None, 3) for line in listed.stdout.decode().splitlines()]
        assert rows[0] == ["TOOL", "FROM", "DESCRIPTION"]
        assert ["text.upper", "agent", "upperer", "Upper-case a text."] in rows
        as_json = await loom("tools", "--json", "-a", address, cwd=tmp_path)
        tools = {t["name"]: t for t in map(json.loads, as_json.stdout.splitlines())}
        schema = tools["text.upper"]["parameters_schema"]
        assert schema["properties"]["text"]["type"] == "string"
        assert tools["text.upper"]["metadata"]["loom.agent"] == "upperer"
        none = await loom("tools", "--prefix", "zzz.", "-a", address, cwd=tmp_path)
        assert none.stdout.decode().strip() == "no tools starting with 'zzz.'"


async def test_agents_hides_the_long_disconnected_unless_all() -> None:
    async with hosting(stale_after_s=0.3, sweep_interval_s=0.05) as host:
        conn = Connection(address=host.address, timeout=5)

        def registration(agent_id: str) -> AgentRegistration:
            return AgentRegistration(agent_id=agent_id, topics=("work.*",))

        async with BridgeClient(host.address, registration("stays"), options=FAST):
            async with BridgeClient(host.address, registration("leaves"), options=FAST):
                pass
            directory = host.runtime.directory

            def gone_long() -> bool:  # disconnected, and past the liveness window
                info = directory.get("leaves")
                return (
                    info is not None
                    and info.status.value == "disconnected"
                    and time.time() * 1000 - info.last_heartbeat_ms > 400
                )

            await wait_until(gone_long)
            out = io.StringIO()
            assert await agents(conn, out=out) == 0
            table, _, note = out.getvalue().partition("(")
            assert "stays" in table
            assert "leaves" not in table
            assert note == "1 agent disconnected for over 0.3 s not shown; --all shows it)\n"
            out = io.StringIO()
            assert await agents(conn, everyone=True, out=out) == 0
            assert "leaves" in out.getvalue()
            assert "not shown" not in out.getvalue()


async def test_topics_subscriptions_shows_every_pattern_of_a_mailbox() -> None:
    async with hosting() as host:
        registration = AgentRegistration(agent_id="many", topics=("a.*", "b.>"))
        async with BridgeClient(host.address, registration, options=FAST):
            out = io.StringIO()
            conn = Connection(address=host.address, timeout=5)
            assert await topics(conn, subscriptions=True, out=out) == 0
            row = next(line for line in out.getvalue().splitlines() if "a.*" in line)
            patterns = set(row.split()[1].split(","))
            assert {"a.*", "b.>", "agent.many.replies"} <= patterns


async def test_status_in_process_counts_agents_and_connections() -> None:
    async with hosting() as host:
        registration = AgentRegistration(agent_id="one", topics=("a.*",))
        async with BridgeClient(host.address, registration, options=FAST):
            out = io.StringIO()
            conn = Connection(address=host.address, timeout=5)
            assert await status(conn, out=out) == 0
            assert "agents:      1 (1 connected remotely)" in out.getvalue()


async def test_tail_follow_survives_a_server_restart(tmp_path: Path) -> None:
    async with loom_serve(tmp_path) as (server, address):
        port = address.rsplit(":", 1)[1]
        async with running("tail", "x.>", "--follow", "-a", address, cwd=tmp_path) as tail:
            await tail.wait_for(r"^tailing x\.> on ")
            first = await loom("publish", "x.one", "before", "-a", address, cwd=tmp_path)
            assert first.returncode == 0, first.stderr
            await tail.wait_for(r"^x\.one message \S+ before$")
            await server.stop(signal.SIGKILL)
            await tail.wait_for(r"^lost 127\.0\.0\.1:\d+ \(.*\); reconnecting")
            async with running(
                "serve", "--port", port, "--data-dir", str(tmp_path / "again"), cwd=tmp_path
            ) as again:
                await again.wait_for(r"listening on")
                await tail.wait_for(r"^reconnected: tailing x\.> on ")
                second = await loom("publish", "x.two", "after", "-a", address, cwd=tmp_path)
                assert second.returncode == 0, second.stderr
                await tail.wait_for(r"^x\.two message \S+ after$")
                assert await tail.stop() == 0
        assert tail.count("Traceback") == 0
        assert tail.count(r"^lost ") == 1  # one line per loss, not one per attempt


async def test_tail_without_follow_ends_when_the_server_goes(tmp_path: Path) -> None:
    async with (
        loom_serve(tmp_path) as (server, address),
        running("tail", "x.>", "-a", address, cwd=tmp_path) as tail,
    ):
        await tail.wait_for(r"^tailing x\.> on ")
        await server.stop(signal.SIGKILL)
        assert await tail.wait() == 1
        assert tail.count(r"^loom tail: ") == 1


async def test_config_shows_each_value_with_its_source(tmp_path: Path) -> None:
    (tmp_path / "loom.toml").write_text("[serve]\nport = 6001\nmax_agents = 7\n")
    env = clean_env(LOOM_LOG_LEVEL="debug", LOOM_TOKEN="0123456789abcdef0123")
    result = await loom("config", "--max-agents", "9", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.decode().splitlines()}
    assert rows["port"] == ["6001", "loom.toml", "[serve]"]
    assert rows["log_level"] == ["debug", "env", "LOOM_LOG_LEVEL"]
    assert rows["max_agents"] == ["9", "flag", "--max-agents"]
    assert rows["host"] == ["127.0.0.1", "default"]
    assert rows["token"] == ["***", "env", "LOOM_TOKEN"]  # never the secret itself
    assert b"0123456789abcdef0123" not in result.stdout
    as_json = await loom("config", "--json", cwd=tmp_path, env=env)
    record = json.loads(as_json.stdout)
    assert record["port"] == {"value": 6001, "source": "loom.toml [serve]"}


async def test_config_says_why_an_invalid_configuration_is_refused(tmp_path: Path) -> None:
    result = await loom("config", "--port", "70000", cwd=tmp_path)
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.startswith("loom config: ")
    assert "port must be 0..65535" in err
    assert "Traceback" not in err


class socket_port:
    """A loopback port bound for the block and never listened on: connections are refused."""

    def __enter__(self) -> int:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
