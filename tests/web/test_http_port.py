"""The HTTP port of ``loom serve`` without a browser: health and readiness, the token on every
page and API, ``/metrics``, the refusal of a non-loopback address without a token or TLS, and
its end with the drain. Real ``loom serve`` subprocesses, real NATS, real signals."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loom.cli._config import ServeConfig
from loom.runtime import AgentRuntime, ConfigError, EventBus
from loom.web import Auth, HttpServer
from tests.cluster.conftest import start_nats_server
from tests.sdk._cli_support import clean_env, loom

from ._support import serve_http

pytestmark = pytest.mark.anyio

TOKEN = "dashboard-test-token-0123456789abcdef"


async def _wait_status(client: httpx2.AsyncClient, url: str, status: int) -> httpx2.Response:
    """GET ``url`` until it answers ``status`` (bounded by the caller's deadline)."""
    while True:
        try:
            response = await client.get(url)
            if response.status_code == status:
                return response
        except httpx2.TransportError:
            pass
        await anyio.sleep(0.05)


def test_a_non_loopback_http_address_needs_a_token_or_tls() -> None:
    with pytest.raises(ConfigError, match=r"http_host '0.0.0.0' is not a loopback address"):
        ServeConfig(http="0.0.0.0:8080")
    with pytest.raises(ConfigError, match=r"http_host '0.0.0.0' is not a loopback address"):
        ServeConfig(http_host="0.0.0.0")
    with pytest.raises(ConfigError, match=r"and the token is too weak"):
        ServeConfig(http_host="0.0.0.0", token="short")
    assert ServeConfig(http_host="0.0.0.0", token=TOKEN).http_address() == ("0.0.0.0", 50052)
    assert ServeConfig().http_address() == ("127.0.0.1", 50052)
    assert ServeConfig(port=0).http_address() == ("127.0.0.1", 0)
    assert ServeConfig(http="off").http_address() is None
    # The parts replace the whole's (a flag --http-port over LOOM_HTTP, say).
    assert ServeConfig(http="127.0.0.1:1", http_port=2).http_address() == ("127.0.0.1", 2)
    assert ServeConfig(http="off", http_port=2).http_address() is None
    with pytest.raises(ConfigError, match="http is host:port or off"):
        ServeConfig(http="nowhere")


async def test_loom_serve_refuses_to_open_http_beyond_loopback_without_a_token(
    tmp_path: Path,
) -> None:
    result = await loom(
        "serve", "--port", "0", "--http", "0.0.0.0:0", "--nats", "off", cwd=tmp_path
    )
    assert result.returncode == 1
    assert b"http_host '0.0.0.0' is not a loopback address: set a token or TLS" in result.stderr
    env = clean_env(LOOM_HTTP_HOST="0.0.0.0")
    result = await loom("serve", "--port", "0", "--nats", "off", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert b"http_host '0.0.0.0' is not a loopback address" in result.stderr


async def test_a_port_in_use_stops_loom_serve_with_one_line(tmp_path: Path) -> None:
    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        HttpServer(runtime, port=0) as taken,
    ):
        result = await loom(
            "serve", "--port", "0", "--http-port", str(taken.port), "--nats", "off",
            cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{taken.port} (HTTP)".encode() in result.stderr


async def test_every_page_and_api_needs_the_token(tmp_path: Path) -> None:
    env = clean_env(LOOM_TOKEN=TOKEN)
    async with (
        serve_http(tmp_path, "--nats", "off", env=env) as (_server, _address, url),
        httpx2.AsyncClient(base_url=url, follow_redirects=False, timeout=10) as client,
    ):
        with anyio.fail_after(20):
            # Health and readiness say only that: open to probes.
            assert (await client.get("/healthz")).text == "ok\n"
            assert (await client.get("/readyz")).text == "ready\n"
            for path in ("/", "/static/app.js", "/api/agents", "/api/tail", "/metrics"):
                for headers in ({}, {"authorization": "Bearer wrong-token"}):
                    response = await client.get(path, headers=headers)
                    assert response.status_code == 401, path
                    assert "Loom" not in response.text or 'name="token"' in response.text
                    assert "agents" not in response.text.lower() or path == "/"
            page = await client.get("/")
            assert 'name="token"' in page.text
            assert "app.js" not in page.text
            wrong = await client.post("/login", data={"token": "nope"})
            assert wrong.status_code == 401
            assert "not accepted" in wrong.text
            assert "set-cookie" not in wrong.headers
            right = await client.post("/login", data={"token": TOKEN})
            assert right.status_code == 303
            cookie = right.headers["set-cookie"]
            assert "HttpOnly" in cookie
            assert "SameSite=strict" in cookie
            assert TOKEN not in cookie
            assert "app.js" in (await client.get("/")).text  # the cookie is kept by the client
            bearer = {"authorization": f"Bearer {TOKEN}"}
            async with httpx2.AsyncClient(base_url=url, timeout=10) as other:
                agents = await other.get("/api/agents", headers=bearer)
                assert agents.status_code == 200
                assert agents.json() == []
                # /metrics is the server's own metrics, Prometheus text that its parser reads.
                scraped = await other.get("/metrics", headers=bearer)
                assert scraped.status_code == 200
                assert scraped.headers["content-type"].startswith("text/plain")
                families = {family.name for family in text_string_to_metric_families(scraped.text)}
                assert {"loom_events_published", "loom_bridge_streams"} <= families


async def test_metrics_are_what_the_callable_returns() -> None:
    body = b"# TYPE loom_events_published_total counter\nloom_events_published_total 3\n"
    content_type = "text/plain; version=0.0.4; charset=utf-8"
    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        HttpServer(runtime, metrics=lambda: (body, content_type), tokens=(TOKEN,)) as http,
        httpx2.AsyncClient(base_url=http.url, timeout=10) as client,
    ):
        with anyio.fail_after(10):
            assert (await client.get("/metrics")).status_code == 401
            got = await client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert got.content == body
    assert got.headers["content-type"] == content_type


def test_the_token_is_compared_whole() -> None:
    auth = Auth((TOKEN, "admin-token-0123456789abcdef"))
    assert auth.check_token(TOKEN)
    assert auth.check_token("admin-token-0123456789abcdef")
    assert not auth.check_token(TOKEN[:-1])
    assert not auth.check_token(TOKEN + "x")
    assert not auth.check_token("")
    assert not Auth((TOKEN,), locked=True).check_token(TOKEN)
    assert not Auth(()).required


async def test_readyz_follows_the_nats_connection(tmp_path: Path) -> None:
    async with start_nats_server(tmp_path / "nats") as nats:
        port = nats.port
        async with (
            serve_http(tmp_path, "--nats", nats.url) as (_server, _address, url),
            httpx2.AsyncClient(base_url=url, timeout=5) as client,
        ):
            with anyio.fail_after(30):
                assert (await client.get("/readyz")).text == "ready\n"
                nats.kill()
                down = await _wait_status(client, "/readyz", 503)
                assert down.text == f"not ready: NATS (nats://127.0.0.1:{port}) is not connected\n"
                assert (await client.get("/healthz")).status_code == 200  # alive, not ready
            async with start_nats_server(tmp_path / "nats", port=port):
                with anyio.fail_after(30):
                    await _wait_status(client, "/readyz", 200)


async def test_the_drain_ends_the_live_tails_and_closes_the_port(tmp_path: Path) -> None:
    async with (
        serve_http(tmp_path, "--nats", "off", "--drain-grace", "5") as (server, _address, url),
        httpx2.AsyncClient(base_url=url, timeout=5) as client,
    ):
        # A live tail is open when the drain begins: it ends, it does not hold the drain up.
        with anyio.fail_after(15):
            async with client.stream("GET", "/api/tail?pattern=>") as stream:
                chunks = stream.aiter_bytes()
                assert (await anext(chunks)).startswith(b"event: hello")
                server.signal(signal.SIGTERM)
                async for _ in chunks:
                    pass  # to its end, which the drain brings
            # Well within the grace: nothing waited for the browser.
            assert await server.process.wait() == 0, server.output
        with pytest.raises(httpx2.TransportError):
            await client.get("/healthz")
    assert "loom serve: SIGTERM received, draining" in server.output
    assert "Traceback" not in server.output
