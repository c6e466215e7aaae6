"""The NATS engine of one ``loom serve``: which server, started how, and whether durability
is available.

:func:`open_nats` is what ``loom serve`` enters first and leaves last: in ``embedded`` mode it
starts and supervises a ``nats-server`` child (:class:`EmbeddedNats`, JetStream under the
store directory) and connects to it; given URLs it connects to that server or cluster; ``off``
starts nothing, and anything durable asked of it is refused with
:class:`~loom.runtime.DurabilityUnavailable`, which says how to turn it on. The
:class:`NatsEngine` it yields holds the one connection and reports where NATS is.
"""

from __future__ import annotations

import enum
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import msgspec

from loom.runtime import DurabilityUnavailable, InvalidArgument

from ._connection import NatsConnection, NatsSettings
from ._embedded import EmbeddedNats

__all__ = ["NatsEngine", "NatsMode", "NatsStatus", "open_nats", "parse_nats"]

_SCHEMES = ("nats", "tls", "ws", "wss")


class NatsMode(enum.Enum):
    """Where a server's NATS comes from."""

    EMBEDDED = "embedded"  # a nats-server child, started and supervised by Loom
    EXTERNAL = "external"  # an existing server or cluster (--nats URL)
    OFF = "off"  # none: memory only, nothing durable


def parse_nats(value: str) -> tuple[NatsMode, tuple[str, ...]]:
    """``embedded``, ``off``, or one or more comma-separated server URLs.

    Raises:
        InvalidArgument: anything else, saying what is accepted.
    """
    word = value.strip()
    if word in ("embedded", "off"):
        return NatsMode(word), ()
    urls = tuple(u.strip() for u in word.split(",") if u.strip())
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in _SCHEMES or not rest:
            raise InvalidArgument(
                f"nats must be 'embedded', 'off' or server URLs "
                f"({', '.join(s + '://host:port' for s in _SCHEMES)}), not {url!r}"
            )
    if not urls:
        raise InvalidArgument("nats must be 'embedded', 'off' or server URLs, not empty")
    return NatsMode.EXTERNAL, urls


class NatsStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Where a server's NATS is (what ``loom status`` prints).

    Attributes:
        mode: ``embedded``, ``external`` or ``off``.
        url: the server's URL without credentials (empty when off).
        store_dir: the embedded server's JetStream storage (empty otherwise).
        connected: whether the connection is up now.
        restarts: times the embedded server was restarted after it died.
    """

    mode: str
    url: str = ""
    store_dir: str = ""
    connected: bool = False
    restarts: int = 0


class NatsEngine:
    """A server's NATS: its mode, its one connection, the embedded server if any."""

    def __init__(
        self,
        mode: NatsMode,
        connection: NatsConnection | None = None,
        server: EmbeddedNats | None = None,
    ) -> None:
        self.mode = mode
        self.connection = connection
        self.server = server

    @property
    def durable(self) -> bool:
        """Whether durable subscriptions are available (a NATS connection exists)."""
        return self.connection is not None

    def require_durable(self, what: str) -> NatsConnection:
        """The connection, for ``what`` (a durable subscription, say), which needs it.

        Raises:
            DurabilityUnavailable: the server runs with ``--nats off``.
        """
        if self.connection is None:
            raise DurabilityUnavailable(what)
        return self.connection

    def status(self) -> NatsStatus:
        """Where NATS is, now."""
        if self.connection is None:
            return NatsStatus(mode=self.mode.value)
        return NatsStatus(
            mode=self.mode.value,
            url=self.connection.url,
            store_dir=str(self.server.store_dir) if self.server is not None else "",
            connected=self.connection.connected,
            restarts=self.server.restarts if self.server is not None else 0,
        )

    def describe(self) -> str:
        """One phrase for the startup log line."""
        s = self.status()
        if self.mode is NatsMode.EMBEDDED:
            return f"embedded at {s.url}, store {s.store_dir}"
        if self.mode is NatsMode.EXTERNAL:
            return f"external at {s.url}"
        return "off (memory only: no durable subscriptions)"


@asynccontextmanager
async def open_nats(
    nats: str,
    *,
    store_dir: str | os.PathLike[str],
    settings: NatsSettings | None = None,
    binary: str | os.PathLike[str] | None = None,
    drain_grace_s: float = 5.0,
) -> AsyncIterator[NatsEngine]:
    """Start (or reach) the NATS of one server, and stop it on leaving.

    Args:
        nats: ``embedded``, ``off`` or server URLs (:func:`parse_nats`).
        store_dir: the embedded server's JetStream storage (``data_dir/nats``).
        settings: credentials and TLS for external servers (their ``servers`` are
            replaced by the URLs of ``nats``); ignored by the other modes.
        binary: the ``nats-server`` to run (default: found as :func:`find_nats_server` does).
        drain_grace_s: how long the connection may drain when leaving.

    Raises:
        InvalidArgument: ``nats`` is none of the accepted forms.
        NatsServerNotFound: embedded, and no ``nats-server`` binary.
        NatsServerFailed: embedded, and it did not start.
        NatsConnectFailed: the first connection failed.
    """
    mode, urls = parse_nats(nats)
    if mode is NatsMode.OFF:
        yield NatsEngine(mode)
        return
    async with AsyncExitStack() as stack:
        server = None
        if mode is NatsMode.EMBEDDED:
            server = await stack.enter_async_context(EmbeddedNats(Path(store_dir), binary=binary))
            settings = NatsSettings(servers=(server.url,), token=server.token, name="loom serve")
        else:
            base = settings if settings is not None else NatsSettings(servers=urls)
            settings = msgspec.structs.replace(base, servers=urls)
        connection = await stack.enter_async_context(
            NatsConnection(settings, drain_grace_s=drain_grace_s)
        )
        yield NatsEngine(mode, connection, server)
