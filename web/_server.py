"""The HTTP port of ``loom serve``: the dashboard's application served by uvicorn inside the
caller's task group, on a socket bound here (so a bind error is ours, typed, before anything
is announced), stopped with the server's drain."""

from __future__ import annotations

import logging
import socket
from types import TracebackType

import anyio
import uvicorn
from anyio.abc import TaskGroup, TaskStatus

from loom.runtime import AgentRuntime

from ._a2a import A2AServer
from ._app import Metrics, Readiness, Viewers, create_app
from ._auth import Auth
from ._errors import HttpBindError
from ._observer import Observer

__all__ = ["HttpServer"]

log = logging.getLogger("loom.web")


class HttpServer:
    """Health, readiness, metrics and the dashboard on one HTTP port; an async context
    manager.

    Entered, it listens (``port`` and ``url`` are then the bound ones) and watches the bus
    for the dashboard; :meth:`aclose` (or leaving the block) ends the live tails, lets the
    requests in flight finish within ``grace_s``, then cuts what is left.

    Args:
        runtime: what the pages show.
        host: the address to bind (the caller checks a non-loopback one has a token or TLS).
        port: the port; 0 picks a free one.
        tokens: the tokens that open the pages (none: open).
        admin_tokens: those of ``tokens`` that alone may act from the pages (retry or drop
            a dead letter); none: whoever the pages let in may.
        locked: refuse every page (see :class:`loom.web.Auth`).
        tls_cert_file: serve HTTPS with this certificate chain (PEM) ...
        tls_key_file: ... and key.
        metrics: the body of ``/metrics`` (``None``: 404).
        ready: what ``/readyz`` answers (``None``: ready while it serves).
        grace_s: how long the requests in flight get when it stops.
        max_tails: live tails open at once.
        a2a: agents to expose over A2A (its stores open on entry, close after the port).

    Raises:
        HttpBindError: (on entry) the address cannot be bound.
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: tuple[str, ...] = (),
        admin_tokens: tuple[str, ...] = (),
        locked: bool = False,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        metrics: Metrics | None = None,
        ready: Readiness | None = None,
        grace_s: float = 5.0,
        max_tails: int = 64,
        a2a: A2AServer | None = None,
    ) -> None:
        self.runtime = runtime
        self.host = host
        self.port = port
        self.grace_s = grace_s
        self.tls = tls_cert_file is not None
        self.observer = Observer(runtime.bus)
        self.viewers = Viewers(max_tails)
        self.auth = Auth(tokens, locked=locked, admin_tokens=admin_tokens)
        self.app = create_app(
            runtime,
            observer=self.observer,
            auth=self.auth,
            metrics=metrics,
            ready=ready,
            secure_cookie=self.tls,
            viewers=self.viewers,
            a2a=a2a,
        )
        self.a2a = a2a
        self._config = uvicorn.Config(
            self.app,
            log_config=None,  # loom serve's logging stays as it is
            access_log=False,
            lifespan="off",
            server_header=False,
            date_header=False,
            ssl_certfile=tls_cert_file,
            ssl_keyfile=tls_key_file,
            timeout_graceful_shutdown=max(1, round(grace_s)),
        )
        self._server = uvicorn.Server(self._config)
        self._stop = anyio.Event()
        self._tg: TaskGroup | None = None

    @property
    def url(self) -> str:
        """``http(s)://host:port/`` as bound."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise HttpBindError(f"cannot listen on {self.host}:{self.port} (HTTP): {exc}") from exc
        return sock

    async def __aenter__(self) -> HttpServer:
        sock = self._bind()
        self.port = sock.getsockname()[1]
        if self.a2a is not None:
            try:
                await self.a2a.__aenter__()
            except BaseException:
                sock.close()
                raise
        self._tg = await anyio.create_task_group().__aenter__()
        try:
            await self._tg.start(self._serve, sock)
        except BaseException:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            if self.a2a is not None:
                await self.a2a.aclose()
            raise
        self._tg.start_soon(self.observer.run)
        return self

    async def _serve(self, sock: socket.socket, *, task_status: TaskStatus[None]) -> None:
        server = self._server
        self._config.load()
        # What Server.serve() does before startup(), without its signal handlers: SIGINT
        # and SIGTERM are loom serve's (its drain stops this server).
        server.lifespan = self._config.lifespan_class(self._config)
        try:
            await server.startup(sockets=[sock])
            task_status.started()
            await self._stop.wait()
        finally:
            # Shielded, and bounded: the requests in flight get their grace, then are cut.
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.grace_s + 1.0):
                self.viewers.close_all()  # the live tails end: their responses complete
                if self.a2a is not None:
                    await self.a2a.end_streams()  # so do the A2A streams
                if server.started:
                    await server.shutdown(sockets=[sock])
            sock.close()

    async def aclose(self) -> None:
        """Stop: new connections refused, live tails ended, requests in flight given
        ``grace_s``; then the dashboard stops watching the bus."""
        tg, self._tg = self._tg, None
        if tg is None:
            return
        self._stop.set()
        tg.cancel_scope.cancel()  # the observer; the server's shutdown above is shielded
        await tg.__aexit__(None, None, None)
        if self.a2a is not None:
            await self.a2a.aclose()  # after the port: no request can reach a closed store
        log.debug("HTTP port %s closed", self.url)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
