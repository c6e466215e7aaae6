"""One nats-py client for the server's NATS: connected once, reconnecting forever after.

:class:`NatsConnection` is an async context manager around ``nats.aio.client.Client``. The
first connection must succeed within ``connect_timeout_s``, or entering raises
:class:`NatsConnectFailed` with the reason in one line (wrong credentials, nothing listening,
a TLS failure): a misconfigured server fails at start, not at its first durable publish.
After that a lost connection is a state, not an error: the client reconnects forever, every
``reconnect_wait_s``, and each change of state is logged in one line (disconnected,
reconnected, closed). While it is away, publishes are held in the client's bounded pending
buffer (``pending_bytes``) and go out on reconnect; a JetStream publish therefore waits for
its ack across a short outage, bounded by its own timeout.

nats-py runs on asyncio only, so this does too.
"""

from __future__ import annotations

import enum
import logging
import ssl
from urllib.parse import urlsplit, urlunsplit

import anyio
import msgspec
import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from ._errors import NatsConnectFailed

__all__ = ["ConnectionState", "NatsConnection", "NatsSettings", "redact_url"]

log = logging.getLogger("loom.nats")


class NatsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where the NATS server is and how to authenticate to it.

    Attributes:
        servers: one or more URLs (``nats://``, ``tls://``, ``ws://``, ``wss://``).
        token: an authorization token.
        user: a user name (with ``password``).
        password: its password.
        creds_file: a NATS credentials file (JWT and NKey seed).
        tls_ca_file: CA bundle to verify the server with (turns TLS on).
        tls_cert_file: client certificate for mutual TLS (with ``tls_key_file``).
        tls_key_file: its private key.
        name: the client name the server shows in its connection list.
        connect_timeout_s: how long the first connection may take.
        reconnect_wait_s: the pause between reconnect attempts to one server.
        pending_bytes: how much a publish may buffer while disconnected; beyond it a
            publish fails at once (nats-py's ``OutboundBufferLimitError``).
        ping_interval_s: how often the client asks the server for a PONG.
        max_outstanding_pings: PINGs left unanswered before the server is taken for lost
            and the client fails over: a server that hangs (its socket open, its process
            stopped or its host partitioned) is left within about ``ping_interval_s *
            (max_outstanding_pings + 1)`` (8 s), not nats-py's default 2 minutes per PING,
            during which the node's publishes wait on it with nothing said.
    """

    servers: tuple[str, ...]
    token: str | None = None
    user: str | None = None
    password: str | None = None
    creds_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    name: str = "loom"
    connect_timeout_s: float = 5.0
    reconnect_wait_s: float = 0.5
    pending_bytes: int = 8 * 1024 * 1024
    ping_interval_s: float = 2.0
    max_outstanding_pings: int = 3

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context the options ask for (``None``: TLS only if a URL says ``tls://``)."""
        if self.tls_ca_file is None and self.tls_cert_file is None:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca_file)
        if self.tls_cert_file is not None:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return context


class ConnectionState(enum.Enum):
    """Where a :class:`NatsConnection` is in its life."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


def redact_url(url: str) -> str:
    """``url`` without the user and password it may carry (for logs and status)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class NatsConnection:
    """The server's one NATS client and its JetStream context; an async context manager.

    Args:
        settings: the server and credentials.
        drain_grace_s: on leaving, how long the client may drain (deliver what it holds,
            flush its publishes) before it is closed.

    Raises (on entering):
        NatsConnectFailed: the first connection failed; the reason in one line.
    """

    def __init__(self, settings: NatsSettings, *, drain_grace_s: float = 5.0) -> None:
        self.settings = settings
        self.drain_grace_s = drain_grace_s
        self.state = ConnectionState.CONNECTING
        self.reconnects = 0
        self._client = Client()
        self._js: JetStreamContext | None = None
        self._up: anyio.Event | None = None

    @property
    def url(self) -> str:
        """The server it is (or was last) connected to, without credentials."""
        current = self._client.connected_url
        if current is not None:
            return redact_url(current.geturl())
        return ", ".join(redact_url(u) for u in self.settings.servers)

    @property
    def client(self) -> Client:
        """The nats-py client (valid once entered)."""
        return self._client

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context on this connection (valid once entered)."""
        if self._js is None:
            raise RuntimeError("NatsConnection is not open")
        return self._js

    @property
    def connected(self) -> bool:
        """Whether the client is connected now."""
        return self.state is ConnectionState.CONNECTED

    async def wait_connected(self) -> None:
        """Return once the client is connected (at once if it is), or closed for good."""
        if self._up is not None:
            await self._up.wait()

    async def __aenter__(self) -> NatsConnection:
        s = self.settings
        self._up = anyio.Event()
        where = ", ".join(redact_url(u) for u in s.servers)
        try:
            tls = s.tls_context()
        except (OSError, ssl.SSLError) as exc:
            raise NatsConnectFailed(where, f"cannot load the TLS files: {exc}") from exc
        try:
            with anyio.fail_after(s.connect_timeout_s + 1):
                await self._client.connect(
                    servers=list(s.servers),
                    name=s.name,
                    token=s.token,
                    user=s.user,
                    password=s.password,
                    user_credentials=s.creds_file,
                    tls=tls,
                    connect_timeout=s.connect_timeout_s,  # type: ignore[arg-type]
                    reconnect_time_wait=s.reconnect_wait_s,  # type: ignore[arg-type]
                    pending_size=s.pending_bytes,
                    ping_interval=s.ping_interval_s,  # type: ignore[arg-type]
                    max_outstanding_pings=s.max_outstanding_pings,
                    # The first connection must work or fail now, with its reason;
                    # reconnecting forever is switched on below, once connected.
                    allow_reconnect=False,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                )
        except TimeoutError as exc:
            await self._client.close()
            raise NatsConnectFailed(where, f"no answer within {s.connect_timeout_s:g} s") from exc
        except (OSError, nats.errors.Error, ssl.SSLError) as exc:
            await self._client.close()
            raise NatsConnectFailed(where, _reason(exc)) from exc
        # nats-py reads these at each disconnection: from now on, a lost server is retried
        # forever (there is no constructor option for "fail first, then retry forever").
        self._client.options["allow_reconnect"] = True
        self._client.options["max_reconnect_attempts"] = -1
        self._js = self._client.jetstream()
        self.state = ConnectionState.CONNECTED
        self._up.set()
        log.info("nats: connected to %s", self.url)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Drain (within the grace) and close the client."""
        if self.state is ConnectionState.CLOSED:
            return
        self.state = ConnectionState.CLOSED  # what follows is no news: no state lines
        with anyio.CancelScope(shield=True):
            if self._client.is_connected:
                with anyio.move_on_after(self.drain_grace_s):
                    try:
                        await self._client.drain()
                    except (nats.errors.Error, OSError) as exc:
                        log.debug("nats: drain failed: %s", exc)
            await self._client.close()
        log.info("nats: connection closed")

    async def _on_error(self, exc: Exception) -> None:
        # A lost connection is said once, by the state line; while disconnected every failed
        # attempt reports here too. Only what is news (a permissions error, say) is a warning.
        lost = (
            OSError,
            nats.errors.UnexpectedEOF,
            nats.errors.ConnectionClosedError,
            nats.errors.StaleConnectionError,
        )
        if self.state is ConnectionState.CONNECTED and not isinstance(exc, lost):
            log.warning("nats: %s", _reason(exc))
        else:
            log.debug("nats: %s", _reason(exc))

    async def _on_disconnected(self) -> None:
        if self.state is ConnectionState.CONNECTED:
            self.state = ConnectionState.RECONNECTING
            self._up = anyio.Event()
            log.warning("nats: disconnected from %s; reconnecting", self.url)

    async def _on_reconnected(self) -> None:
        self.state = ConnectionState.CONNECTED
        self.reconnects += 1
        if self._up is not None:
            self._up.set()
        log.info("nats: reconnected to %s", self.url)

    async def _on_closed(self) -> None:
        if self.state not in (ConnectionState.CONNECTING, ConnectionState.CLOSED):
            log.warning("nats: connection closed")
        self.state = ConnectionState.CLOSED
        if self._up is not None:
            self._up.set()  # nobody waits for a connection that will not come


def _reason(exc: BaseException) -> str:
    """One line saying what went wrong, in the operator's words."""
    text = str(exc).strip() or type(exc).__name__
    if "authorization violation" in text.lower():
        return (
            "authorization violation: the server refused the credentials "
            "(check the NATS token, user and password, or creds file)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running, and on that port?)"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        # What a TLS server that wants a client certificate does to a client without one.
        return (
            "the server closed the connection during the handshake (does it require a "
            "client certificate, or TLS?)"
        )
    if isinstance(exc, ssl.SSLError):
        if "CERTIFICATE_REQUIRED" in str(exc.reason):
            return "TLS: the server requires a client certificate (and its key)"
        return f"TLS: {exc.reason or text}"
    if isinstance(exc, nats.errors.NoServersError):
        return "no server could be reached"
    return text.removeprefix("nats: ").strip("'")
