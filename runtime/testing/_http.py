"""A small HTTP/1.1 server on anyio, for test endpoints that must control their bytes exactly.

Only what HTTP clients like ``httpx`` send to an API is understood: a request line, headers, a
``Content-Length`` body, keep-alive. Responses are either whole (``Content-Length``) or
streamed with chunked transfer encoding, one chunk per :meth:`Responder.send_chunk`, so a test
decides how a server-sent-event stream is split. It runs on asyncio and trio alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["HTTPRequest", "Handler", "Responder", "serve_connection"]

_MAX_HEAD = 64 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    411: "Length Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class HTTPRequest:
    """One received request; header names are lower-cased."""

    __slots__ = ("body", "headers", "method", "path")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body


class Responder:
    """Writes the answer to one request."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self.started = False
        self.chunked = False

    async def send(
        self, status: int, body: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """A whole response."""
        head = self._head(status, {"content-length": str(len(body)), **(headers or {})})
        self.started = True
        await self._stream.send(head + body)

    async def start_chunked(self, status: int, *, headers: Mapping[str, str] | None = None) -> None:
        """The head of a chunked response; follow with :meth:`send_chunk` and :meth:`end`."""
        self.started = self.chunked = True
        await self._stream.send(
            self._head(status, {"transfer-encoding": "chunked", **(headers or {})})
        )

    async def send_chunk(self, data: bytes) -> None:
        if data:
            await self._stream.send(b"%x\r\n%b\r\n" % (len(data), data))

    async def end(self) -> None:
        await self._stream.send(b"0\r\n\r\n")

    async def wait_disconnected(self) -> None:
        """Return once the client has closed the connection (or it broke).

        For a handler that is not answering yet: HTTP clients send nothing more on a connection
        until their request is answered, so whatever arrives meanwhile is read and dropped.
        """
        while True:
            try:
                await self._stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return

    @staticmethod
    def _head(status: int, headers: Mapping[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


Handler = Callable[[HTTPRequest, Responder], Awaitable[None]]


async def serve_connection(stream: anyio.abc.ByteStream, handler: Handler) -> None:
    """Serve requests on one connection until the client closes it."""
    reader = BufferedByteReceiveStream(stream)
    async with stream:
        while True:
            try:
                head = await reader.receive_until(b"\r\n\r\n", _MAX_HEAD)
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _version = request_line.split(" ", 2)
                headers: dict[str, str] = {}
                for line in header_lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if "chunked" in headers.get("transfer-encoding", ""):
                    await Responder(stream).send(411, b"chunked request bodies are not supported")
                    return
                length = int(headers.get("content-length", "0"))
                body = await reader.receive_exactly(length) if length else b""
            except (
                anyio.EndOfStream,
                anyio.IncompleteRead,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                anyio.DelimiterNotFound,
                ValueError,
            ):
                return
            responder = Responder(stream)
            try:
                await handler(HTTPRequest(method, path, headers, body), responder)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the client went away (e.g. it timed out)
            if headers.get("connection", "").lower() == "close":
                return
