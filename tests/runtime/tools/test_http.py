"""http.fetch against a real HTTP server on 127.0.0.1:0."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from loom.runtime import InvalidArgument
from loom.runtime.tools import (
    FetchResult,
    HttpFetch,
    InvalidToolArguments,
    ToolFailed,
    ToolPermissionDenied,
    ToolRegistry,
    ToolTimeout,
)
from loom.runtime.tools._http import _Policy

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])]

BIG = b"x" * 100_000


def response(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def handle(stream: SocketStream) -> None:
    async with stream:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive()
            request += chunk
        method, path, _ = request.split(b"\r\n", 1)[0].decode().split(" ")
        match path:
            case "/hello":
                out = response("200 OK", b"hello", "Content-Type: text/plain; charset=utf-8")
            case "/latin":
                out = response(
                    "200 OK", "café".encode("latin-1"), "Content-Type: text/plain; charset=latin-1"
                )
            case "/bin":
                out = response("200 OK", b"\xff\xfe\x00", "Content-Type: application/octet-stream")
            case "/big":
                out = response("200 OK", BIG)
            case "/redirect-in":
                out = response("302 Found", b"", "Location: /hello")
            case "/redirect-out":
                out = response("302 Found", b"", "Location: http://elsewhere.invalid/")
            case "/loop":
                out = response("302 Found", b"", "Location: /loop")
            case "/slow":
                await anyio.sleep_forever()
            case _:
                out = response("404 Not Found", b"no")
        if method == "HEAD":
            out = out.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        await stream.send(out)


@asynccontextmanager
async def http_server() -> AsyncIterator[int]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()


def registry(*hosts: str, **kwargs: object) -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(HttpFetch(allow_hosts=hosts, **kwargs))  # type: ignore[arg-type]
    return registry


async def fetch(registry: ToolRegistry, url: str, **more: object) -> FetchResult:
    result = await registry.call("http.fetch", {"url": url, **more})
    assert isinstance(result, FetchResult)
    return result


async def test_allowlisted_ip_literal_is_fetched() -> None:
    async with http_server() as port:
        tools = registry("127.0.0.1")
        got = await fetch(tools, f"http://127.0.0.1:{port}/hello")
        assert (got.status, got.encoding, got.content, got.truncated) == (
            200,
            "text",
            "hello",
            False,
        )
        assert got.headers["content-type"] == "text/plain; charset=utf-8"
        got = await fetch(tools, f"http://127.0.0.1:{port}/latin")
        assert got.content == "café"
        got = await fetch(tools, f"http://127.0.0.1:{port}/bin")
        assert (got.encoding, base64.b64decode(got.content)) == ("base64", b"\xff\xfe\x00")
        got = await fetch(tools, f"http://127.0.0.1:{port}/missing")
        assert got.status == 404
        got = await fetch(tools, f"http://127.0.0.1:{port}/hello", method="HEAD")
        assert (got.status, got.content) == (200, "")


async def test_hosts_not_allowlisted_are_refused() -> None:
    async with http_server() as port:
        tools = registry("example.com")
        for url in (
            f"http://127.0.0.1:{port}/hello",
            f"http://localhost:{port}/hello",
            "http://example.org/",
            "http://sub.example.com/",
            "http://example.com.evil.net/",
            "ftp://example.com/",
            "file:///etc/passwd",
            "http://user:pw@example.com/",
        ):
            with pytest.raises(ToolPermissionDenied):
                await fetch(tools, url)
        with pytest.raises(InvalidToolArguments):
            await fetch(tools, "http://example.com:99999/")
        with pytest.raises(InvalidToolArguments):
            await fetch(tools, "http:///nohost")


async def test_names_resolving_to_private_addresses_need_allow_private() -> None:
    async with http_server() as port:
        with pytest.raises(ToolPermissionDenied, match="non-public"):
            await fetch(registry("localhost"), f"http://localhost:{port}/hello")
        got = await fetch(
            registry("localhost", allow_private=True), f"http://localhost:{port}/hello"
        )
        assert got.content == "hello"


async def test_wildcards_match_subdomains_only() -> None:
    async with http_server() as port:
        tools = registry("*.localhost", allow_private=True)
        with pytest.raises(ToolPermissionDenied, match="not allowed"):
            await fetch(tools, f"http://localhost:{port}/hello")
        with pytest.raises(ToolPermissionDenied, match="not allowed"):
            await fetch(tools, f"http://evil-localhost:{port}/hello")
    # A subdomain passes the host check (checked without resolving: no DNS in tests).
    policy = _Policy(["*.example.com"], allow_private=False)
    assert policy.check_url("https://a.b.example.com/x?y=1") == (
        "https",
        "a.b.example.com",
        None,
        "/x?y=1",
    )
    with pytest.raises(ToolPermissionDenied):
        policy.check_url("https://example.com/")


async def test_redirects_are_checked_each_hop() -> None:
    async with http_server() as port:
        tools = registry("127.0.0.1", max_redirects=3)
        got = await fetch(tools, f"http://127.0.0.1:{port}/redirect-in")
        assert (got.url, got.content) == (f"http://127.0.0.1:{port}/hello", "hello")
        with pytest.raises(ToolPermissionDenied, match=r"elsewhere\.invalid"):
            await fetch(tools, f"http://127.0.0.1:{port}/redirect-out")
        with pytest.raises(ToolFailed, match="redirects"):
            await fetch(tools, f"http://127.0.0.1:{port}/loop")


async def test_size_cap() -> None:
    async with http_server() as port:
        got = await fetch(registry("127.0.0.1", max_bytes=1000), f"http://127.0.0.1:{port}/big")
        assert (got.bytes_read, got.truncated, got.content) == (1000, True, "x" * 1000)
        got = await fetch(registry("127.0.0.1"), f"http://127.0.0.1:{port}/big")
        assert (got.bytes_read, got.truncated) == (len(BIG), False)


async def test_timeout() -> None:
    async with http_server() as port:
        start = anyio.current_time()
        with pytest.raises(ToolTimeout):
            await fetch(registry("127.0.0.1", timeout=0.2), f"http://127.0.0.1:{port}/slow")
        assert anyio.current_time() - start < 3
        # The registry's own timeout bounds the call as well.
        tools = ToolRegistry()
        tools.register(HttpFetch(allow_hosts=["127.0.0.1"]), timeout=0.2)
        with pytest.raises(ToolTimeout):
            await fetch(tools, f"http://127.0.0.1:{port}/slow")


async def test_connection_refused_is_a_failure() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    await listener.aclose()
    with pytest.raises(ToolFailed) as info:
        await fetch(registry("127.0.0.1"), f"http://127.0.0.1:{port}/")
    assert info.value.cause_type == "ConnectError"


async def test_construction() -> None:
    with pytest.raises(InvalidArgument):
        HttpFetch(allow_hosts=[])
    with pytest.raises(InvalidArgument):
        HttpFetch(allow_hosts=["http://example.com"])
    tool = HttpFetch(allow_hosts=["Example.COM.", "*.python.org", "[::1]"])
    assert "*.python.org, ::1, example.com." in tool.description
