"""``http.fetch``: GET or HEAD a URL on an allowlisted host, bounded in time and size.

Off unless built with a host allowlist (:func:`native_tools` leaves it out by default).

* **Hosts**: a URL's host must be listed exactly (``docs.python.org``) or under a wildcard
  (``*.python.org`` matches subdomains, not the bare domain). An IP-literal URL is allowed
  only when that literal is listed itself.
* **Addresses**: a listed host name must resolve to public addresses; loopback, private,
  link-local and other non-global addresses are refused unless ``allow_private=True``. The
  check happens in the connect step itself (a network backend that resolves, filters and
  connects to the address it checked), so DNS rebinding between a check and the connect is
  not possible.
* **Redirects** are followed by hand, at most ``max_redirects``, and every hop is checked
  like the first URL.
* **Size**: the body is streamed and cut at ``max_bytes`` (``truncated`` says so); it is
  requested with ``Accept-Encoding: identity`` so the cap counts real bytes and no
  decompression bomb can go off.
* **Time**: ``timeout`` bounds each of connect, each read and each write; the registry's
  timeout bounds the whole call. A timeout raises :class:`ToolTimeout`.
* **No ambient authority**: no proxies or credentials from the environment, no cookies, no
  userinfo in URLs.

Built on ``httpcore2`` (the transport under ``httpx2``, which ``mcp`` depends on): its
network-backend hook is what lets the address check and the connect be one step; a
connection pool lives for one call only, so the tool holds no resources between calls.
"""

from __future__ import annotations

import base64
import codecs
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from contextlib import aclosing
from typing import Final, Literal
from urllib.parse import urljoin, urlsplit

import anyio
import httpcore2
import msgspec

from .._errors import InvalidArgument
from ._errors import InvalidToolArguments, ToolFailed, ToolPermissionDenied, ToolTimeout
from ._tool import JSONObject

__all__ = ["FetchResult", "HttpFetch"]

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_HOST: Final = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FetchResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ``http.fetch`` returns.

    Attributes:
        url: the final URL, after redirects.
        status: the HTTP status code.
        headers: response headers, names lower-cased, repeated ones joined with ``", "``.
        encoding: ``"text"`` when the body decoded with its charset (UTF-8 by default),
            else ``"base64"``.
        content: the body (empty for HEAD).
        bytes_read: body bytes in ``content``.
        truncated: the body went on past the cap.
    """

    url: str
    status: int
    headers: dict[str, str]
    encoding: Literal["text", "base64"]
    content: str
    bytes_read: int
    truncated: bool


class _Policy:
    __slots__ = ("allow_private", "exact", "ips", "suffixes")

    def __init__(self, hosts: Iterable[str], allow_private: bool) -> None:
        self.exact: set[str] = set()
        self.suffixes: list[str] = []
        self.ips: set[IPAddress] = set()
        self.allow_private = allow_private
        for entry in hosts:
            host = entry.strip().lower().rstrip(".")
            if (ip := _ip(host.removeprefix("[").removesuffix("]"))) is not None:
                self.ips.add(ip)
            elif host.startswith("*.") and _HOST.fullmatch(host[2:]):
                self.suffixes.append(host[1:])
            elif _HOST.fullmatch(host):
                self.exact.add(host)
            else:
                raise InvalidArgument(f"invalid host {entry!r}: give a host name or an IP")
        if not (self.exact or self.suffixes or self.ips):
            raise InvalidArgument("http.fetch needs at least one allowed host")

    def check_url(self, url: str) -> tuple[str, str, int | None, str]:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidToolArguments(f"invalid URL: {exc}", path=("url",)) from None
        if parts.scheme not in ("http", "https"):
            raise ToolPermissionDenied(f"{url!r}: only http and https URLs are fetched")
        if parts.username is not None or parts.password is not None:
            raise ToolPermissionDenied(f"{url!r}: credentials in URLs are not allowed")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise InvalidToolArguments(f"invalid URL {url!r}: no host", path=("url",))
        if (ip := _ip(host)) is not None:
            if ip not in self.ips:
                raise ToolPermissionDenied(f"{url!r}: IP address {host} is not allowed")
        elif not (host in self.exact or any(host.endswith(s) for s in self.suffixes)):
            raise ToolPermissionDenied(f"{url!r}: host {host!r} is not allowed")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return parts.scheme, host, port, target

    async def addresses(self, host: str, port: int) -> list[str]:
        if _ip(host) is not None:
            return [host]  # an explicitly listed literal (check_url let nothing else through)
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found: list[str] = []
        refused: list[str] = []
        for *_, sockaddr in infos:
            address = str(sockaddr[0])
            ip = _ip(address)
            if ip is None:
                continue
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if ip.is_global or self.allow_private:
                if address not in found:
                    found.append(address)
            else:
                refused.append(address)
        if not found:
            raise ToolPermissionDenied(
                f"host {host!r} resolves only to non-public addresses ({', '.join(refused)})"
            )
        return found


class _GuardedBackend(httpcore2.AsyncNetworkBackend):
    """Resolves, checks and connects in one step, to the checked address."""

    def __init__(self, policy: _Policy) -> None:
        self._policy = policy
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        error: Exception | None = None
        for address in await self._policy.addresses(host, port):
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise ToolPermissionDenied("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class HttpFetch:
    """``http.fetch``: fetch a URL from an allowlisted host (see the module docstring).

    Args:
        allow_hosts: host names, ``*.domain`` wildcards or IP literals; must not be empty.
        allow_private: let listed host names resolve to non-public addresses (loopback,
            private ranges); IP literals listed in ``allow_hosts`` are always allowed.
        timeout: seconds for each connect, read and write.
        max_bytes: the most body bytes returned.
        max_redirects: the most redirects followed.
        user_agent: the ``User-Agent`` header sent.

    Raises:
        InvalidArgument: no host given, or a malformed one.
    """

    name = "http.fetch"

    def __init__(
        self,
        *,
        allow_hosts: Iterable[str],
        allow_private: bool = False,
        timeout: float = 10.0,
        max_bytes: int = 1 << 20,
        max_redirects: int = 5,
        user_agent: str = "loom-http-fetch",
    ) -> None:
        if timeout <= 0 or max_bytes < 1 or max_redirects < 0:
            raise InvalidArgument("timeout and max_bytes must be positive, max_redirects >= 0")
        self._policy = _Policy(allow_hosts, allow_private)
        # Loading the trust store takes tens of milliseconds: once per tool, not per call.
        self._ssl = ssl.create_default_context()
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._headers = [
            (b"User-Agent", user_agent.encode("ascii")),
            (b"Accept-Encoding", b"identity"),
            (b"Connection", b"close"),
        ]
        hosts = sorted(
            [*self._policy.exact, *("*" + s for s in self._policy.suffixes)]
            + [str(ip) for ip in self._policy.ips]
        )
        self.description = (
            "Fetch a web page or file over http(s) with GET (or HEAD for headers only). "
            "Allowed hosts: " + ", ".join(hosts) + ". Text comes back as text, other content "
            "as base64; long bodies are cut (truncated is true)."
        )
        self.parameters_schema: JSONObject = {
            "type": "object",
            "properties": {
                "url": {"type": "string", "minLength": 1},
                "method": {"enum": ["GET", "HEAD"], "default": "GET"},
            },
            "required": ["url"],
            "additionalProperties": False,
        }

    async def call(self, arguments: JSONObject) -> FetchResult:
        url: str = arguments["url"]
        method: str = arguments.get("method", "GET")
        timeouts = dict.fromkeys(("connect", "read", "write", "pool"), self._timeout)
        try:
            async with httpcore2.AsyncConnectionPool(
                ssl_context=self._ssl,
                network_backend=_GuardedBackend(self._policy),
                retries=0,
            ) as pool:
                for _ in range(self._max_redirects + 1):
                    scheme, host, port, target = self._policy.check_url(url)
                    request_url = httpcore2.URL(scheme=scheme, host=host, port=port, target=target)
                    async with pool.stream(
                        method,
                        request_url,
                        headers=self._headers,
                        extensions={"timeout": timeouts},
                    ) as response:
                        location = _header(response.headers, b"location")
                        if response.status in _REDIRECTS and location:
                            url = urljoin(url, location)
                            continue
                        return await self._result(url, method, response)
        except httpcore2.TimeoutException:
            raise ToolTimeout(self._timeout) from None
        except httpcore2.NetworkError as exc:
            raise ToolFailed(type(exc).__name__, str(exc) or "network error") from None
        except httpcore2.ProtocolError as exc:
            raise ToolFailed(type(exc).__name__, str(exc) or "protocol error") from None
        raise ToolFailed("TooManyRedirects", f"more than {self._max_redirects} redirects")

    async def _result(self, url: str, method: str, response: httpcore2.Response) -> FetchResult:
        chunks: list[bytes] = []
        kept = 0
        truncated = False
        if method != "HEAD":
            async with aclosing(response.aiter_stream()) as stream:
                async for chunk in stream:
                    room = self._max_bytes - kept
                    if len(chunk) > room:
                        chunks.append(chunk[:room])
                        kept += room
                        truncated = True
                        break  # leaving the stream closes the connection: nothing more is read
                    chunks.append(chunk)
                    kept += len(chunk)
        body = b"".join(chunks)
        headers: dict[str, str] = {}
        for name, value in response.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        charset = _charset(headers.get("content-type", ""))
        try:
            decoder = codecs.getincrementaldecoder(charset)()
            content = decoder.decode(body, final=not truncated)
        except (LookupError, UnicodeDecodeError):
            return FetchResult(
                url=url,
                status=response.status,
                headers=headers,
                encoding="base64",
                content=base64.b64encode(body).decode("ascii"),
                bytes_read=len(body),
                truncated=truncated,
            )
        used = len(body) - len(decoder.getstate()[0])
        return FetchResult(
            url=url,
            status=response.status,
            headers=headers,
            encoding="text",
            content=content,
            bytes_read=used,
            truncated=truncated,
        )


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip('"').lower()
    return "utf-8"
