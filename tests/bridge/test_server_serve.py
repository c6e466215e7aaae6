"""``loom serve`` hosts the bridge: ready with its port, serving, drained on a signal; its
configuration carries the token, TLS files and limits from loom.toml, LOOM_* and flags."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from loom.bridge import Limits, TLSConfig
from loom.bridge._generated import bridge_pb2
from loom.cli._config import ServeConfig, load_config
from loom.cli._serve import serve
from loom.runtime import ConfigError

from ._server_harness import OldAgent, auth, channel

pytestmark = pytest.mark.anyio


async def test_serve_hosts_the_bridge_and_drains_on_a_signal(tmp_path: Path) -> None:
    config = ServeConfig(port=0, data_dir=str(tmp_path / "data"), token="t0k", drain_grace_s=1)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, config)
        target = f"127.0.0.1:{port}"
        async with channel(target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            reply = await health.Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            agent = OldAgent(ch, "served", metadata=auth("t0k"))
            await agent.connect()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await OldAgent(ch, "anon").register()
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            with anyio.fail_after(5):
                os.kill(os.getpid(), signal.SIGTERM)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await agent.read()
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    # serve returned: the port is free again.
    with anyio.fail_after(5):
        async with channel(target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await OldAgent(ch, "late").bridge.Heartbeat(
                    bridge_pb2.HeartbeatRequest(), timeout=1
                )
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_config_carries_security_and_limits(tmp_path: Path) -> None:
    toml = tmp_path / "loom.toml"
    toml.write_text(
        '[serve]\nhost = "0.0.0.0"\ntls_cert_file = "s.pem"\ntls_key_file = "s.key"\n'
        "max_agents = 5\n"
    )
    config = load_config(
        toml_path=toml,
        environ={
            "LOOM_TOKEN": "abcdefghijklmnop-0123",
            "LOOM_MAX_MESSAGE_BYTES": "65536",
            "LOOM_TLS_BIND_AGENT_IDS": "true",
        },
        overrides={"max_topics_per_agent": 3, "tls_client_ca_file": "ca.pem"},
    )
    assert config.token == "abcdefghijklmnop-0123"
    assert config.tls() == TLSConfig(
        cert_file="s.pem", key_file="s.key", client_ca_file="ca.pem", bind_agent_ids=True
    )
    assert config.limits() == Limits(max_message_bytes=65536, max_topics_per_agent=3, max_agents=5)
    assert ServeConfig().tls() is None


@pytest.mark.parametrize(
    ("doc", "env", "needle"),
    [
        ('[serve]\nhost = "0.0.0.0"\n', {}, "not a loopback address"),
        ("", {"LOOM_HOST": "10.1.2.3"}, "set a token or TLS"),
        ('[serve]\ntls_cert_file = "a.pem"\n', {}, "go together"),
        ('[serve]\ntls_client_ca_file = "ca.pem"\n', {}, "mutual TLS"),
        (
            '[serve]\ntls_cert_file = "a.pem"\ntls_key_file = "a.key"\n',
            {"LOOM_TLS_BIND_AGENT_IDS": "1"},
            "tls_bind_agent_ids needs mutual TLS",
        ),
        ("", {"LOOM_TLS_BIND_AGENT_IDS": "maybe"}, "LOOM_TLS_BIND_AGENT_IDS"),
        ('[serve]\ntoken = ""\n', {}, "token must not be empty"),
        ("[serve]\nmax_agents = 0\n", {}, "max_agents"),
        ("", {"LOOM_MAX_MESSAGE_BYTES": "lots"}, "LOOM_MAX_MESSAGE_BYTES"),
    ],
)
def test_config_refuses_insecure_or_bad_settings(
    tmp_path: Path, doc: str, env: dict[str, str], needle: str
) -> None:
    toml = tmp_path / "loom.toml"
    toml.write_text(doc)
    with pytest.raises(ConfigError, match=needle):
        load_config(toml_path=toml, environ=env, overrides={})


async def test_cli_refuses_a_non_loopback_host_without_auth(tmp_path: Path) -> None:
    result = await anyio.run_process(
        [sys.executable, "-m", "loom.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    assert b"not a loopback address" in result.stderr
