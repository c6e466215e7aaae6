"""``loom serve`` as a real subprocess: it starts, says so, and stops cleanly on signals."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from loom.cli._config import ServeConfig, load_config
from loom.runtime import ConfigError

from ._cli_support import clean_env, loom, loom_serve, running

pytestmark = pytest.mark.anyio

LOOM = [sys.executable, "-m", "loom.cli"]


async def _serve_until_ready(tmp_path: Path, *extra: str) -> anyio.abc.Process:
    proc = await anyio.open_process(
        [*LOOM, "serve", "--port", "0", "--data-dir", str(tmp_path / "data"), *extra],
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    seen = b""
    with anyio.fail_after(20):
        async for chunk in proc.stderr:
            seen += chunk
            if b"event bus up" in seen:
                return proc
    raise AssertionError(f"loom serve never became ready: {seen.decode()!r}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_serve_starts_and_stops_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    proc = await _serve_until_ready(tmp_path)
    assert (tmp_path / "data").is_dir()
    proc.send_signal(signum)
    assert proc.stderr is not None
    rest = b""
    with anyio.fail_after(10):
        async for chunk in proc.stderr:
            rest += chunk
        rc = await proc.wait()
    assert rc == 0, rest.decode()
    assert b"draining" in rest
    assert rest.rstrip().endswith(b"loom serve: stopped")


async def test_serve_rejects_a_bad_config(tmp_path: Path) -> None:
    (tmp_path / "loom.toml").write_text("[serve]\nport = 'not a port'\n")
    result = await anyio.run_process([*LOOM, "serve"], cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert b"configuration" in result.stderr
    assert b"port" in result.stderr


async def test_help_teaches_with_examples() -> None:
    result = await anyio.run_process([*LOOM, "serve", "--help"])
    assert b"examples:" in result.stdout
    assert b"loom serve --port 0" in result.stdout


def test_config_sources_merge_in_order(tmp_path: Path) -> None:
    toml = tmp_path / "loom.toml"
    toml.write_text('[serve]\nport = 6000\nhost = "127.0.0.2"\nlog_level = "debug"\n')
    cfg = load_config(
        toml_path=toml,
        environ={"LOOM_PORT": "7000", "LOOM_DATA_DIR": "/tmp/x"},
        overrides={"port": 8000, "host": None},
    )
    assert cfg == ServeConfig(host="127.0.0.2", port=8000, data_dir="/tmp/x", log_level="debug")


def test_config_carries_the_settle_window_and_the_stale_threshold(tmp_path: Path) -> None:
    toml = tmp_path / "loom.toml"
    toml.write_text("[serve]\nsettle_s = 3.5\nstale_after_s = 4\n")
    cfg = load_config(toml_path=toml, environ={}, overrides={})
    assert (cfg.settle_s, cfg.stale_after_s) == (3.5, 4.0)
    cfg = load_config(
        toml_path=toml, environ={"LOOM_SETTLE": "1", "LOOM_STALE_AFTER": "9"}, overrides={}
    )
    assert (cfg.settle_s, cfg.stale_after_s) == (1.0, 9.0)
    cfg = load_config(toml_path=None, environ={}, overrides={"settle_s": 0.0})
    assert (cfg.settle_s, cfg.stale_after_s) == (0.0, 15.0)
    assert ServeConfig().settle_s == 2.0


@pytest.mark.parametrize(
    ("doc", "env", "needle"),
    [
        ("[serve]\nport = 70000\n", {}, "port"),
        ("[serve]\nlog_level = 'loud'\n", {}, "log_level"),
        ("[serve]\nbogus = 1\n", {}, "bogus"),
        ("serve = 3\n", {}, "table"),
        ("[serve\n", {}, "loom.toml"),
        ("", {"LOOM_PORT": "eighty"}, "LOOM_PORT"),
        ("[serve]\nsettle_s = -1\n", {}, "settle_s"),
        ("[serve]\nstale_after_s = 0\n", {}, "stale_after_s"),
    ],
)
def test_config_errors_name_the_problem(
    tmp_path: Path, doc: str, env: dict[str, str], needle: str
) -> None:
    toml = tmp_path / "loom.toml"
    toml.write_text(doc)
    with pytest.raises(ConfigError, match=needle):
        load_config(toml_path=toml, environ=env, overrides={})


async def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await anyio.run_process(
            [*LOOM, "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            cwd=tmp_path,
            check=False,
            env=clean_env(),
        )
    assert result.returncode == 1
    err = result.stderr.decode()
    assert (
        err.splitlines()[-1] == f"loom: cannot listen on 127.0.0.1:{port}: address already in use"
    )
    assert "add_port" not in err  # no gRPC C-core line
    assert "GRPC_VERBOSITY" not in err


def test_an_unknown_key_names_its_table(tmp_path: Path) -> None:
    toml = tmp_path / "loom.toml"
    toml.write_text("[serve]\nprot = 50051\n")
    with pytest.raises(ConfigError) as info:
        load_config(toml_path=toml, environ={}, overrides={})
    assert str(info.value) == f"configuration ({toml}): [serve] has no key 'prot'"


def test_loom_bridge_addr_is_where_serve_listens(tmp_path: Path) -> None:
    cfg = load_config(toml_path=None, environ={"LOOM_BRIDGE_ADDR": "127.0.0.2:6001"}, overrides={})
    assert (cfg.host, cfg.port) == ("127.0.0.2", 6001)
    port_wins = load_config(
        toml_path=None,
        environ={"LOOM_BRIDGE_ADDR": "127.0.0.2:6001", "LOOM_PORT": "6002"},
        overrides={},
    )
    assert (port_wins.host, port_wins.port) == ("127.0.0.2", 6002)
    with pytest.raises(ConfigError, match="LOOM_BRIDGE_ADDR"):
        load_config(toml_path=None, environ={"LOOM_BRIDGE_ADDR": "nocolon"}, overrides={})


async def test_json_logs_and_debug_decisions(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(
        "from loom import Agent, capability\n\n"
        "@capability('text.upper')\n"
        "async def upper(text: str) -> str:\n"
        '    """Upper-case a text."""\n'
        "    return text.upper()\n\n"
        "upperer = Agent('upperer', capabilities=[upper])\n"
    )
    async with loom_serve(tmp_path, "--log-format", "json", "--log-level", "debug") as (
        server,
        address,
    ):
        async with running("run", "agent.py", "-a", address, cwd=tmp_path) as run:
            await run.wait_for("connected to .* as upperer")
            ok = await loom("call", "text.upper", '{"text": "a"}', "-a", address, cwd=tmp_path)
            assert ok.returncode == 0, ok.stderr
            await server.wait_for(r"tool call text\.upper \(\S+\): OK in \d+\.\d ms")
            assert await run.stop() == 0
        await server.wait_for("agent upperer disconnected")
        assert await server.stop() == 0
    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    assert records, server.output
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    messages = [r["message"] for r in records]
    assert "agent upperer registered (1 topics, 1 tools)" in messages
    assert messages.count("agent upperer disconnected") == 1
    assert not any(r["logger"].startswith(("asyncio", "grpc")) for r in records)


def test_config_node_name_defaults_to_the_host_and_must_be_one_subject_token() -> None:
    assert load_config(toml_path=None, environ={}, overrides={}).node_name()
    named = load_config(toml_path=None, environ={"LOOM_NODE": "east-1"}, overrides={})
    assert named.node_name() == "east-1"
    for bad in ("a.b", "a b", "x" * 65, "*"):
        with pytest.raises(ConfigError, match="one NATS subject token"):
            load_config(toml_path=None, environ={}, overrides={"node": bad})
