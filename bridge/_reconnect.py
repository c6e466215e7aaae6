"""The client's reconnect state machine: an explicit status, backoff with a cap and jitter.

::

            +------------+  connected()  +-----------+
    start ->| CONNECTING |-------------->| CONNECTED |
            +------------+               +-----------+
                  |  attempt failed         |  connection ended
                  v                         v
            +--------------+  connected()   |
            | RECONNECTING |<---------------+
            +--------------+---------------> CONNECTED
          any state --- close() or a fatal error ---> CLOSED   (final)

One loop runs one connection attempt at a time, so a registration can never be made twice
concurrently: the next attempt starts only after the previous connection has ended (its
session torn down). Between attempts the loop sleeps ``Backoff.delay(n)``: exponential from
``initial`` by ``multiplier`` up to ``maximum``, then reduced by up to ``jitter`` of itself at
random, so that many agents cut off by one server restart do not come back in lockstep.
``n`` counts failures since the last successful connection; a connection that was
established resets it, so a server restart costs only the first, short delay.

The loop logs one line per change of state, on ``loom.bridge.client``: ``connecting to X``,
``cannot connect to X: connection refused; retrying in 0.2 s`` (the same failure again is
logged at DEBUG only), ``connected to X as ID``, ``connection to X lost: ...; reconnecting in
0.1 s``, ``reconnected to X as ID``, ``disconnected from X``. A fatal error is not logged here,
not even as ``disconnected from X``: whoever gets it raised says it, once, in its own words
(``agent 'x' was released by the operator of X ...``). A failure that is a wait rather than a
fault (the agent's id not yet released: see :class:`Wait`) is one line of its own, saying until
when.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Awaitable, Callable

import anyio
import msgspec

from loom.runtime import InvalidArgument

__all__ = [
    "Backoff",
    "ConnectionStatus",
    "ReconnectStatistics",
    "Reconnector",
    "StateListener",
    "Wait",
]

log = logging.getLogger("loom.bridge.client")


class ConnectionStatus(enum.Enum):
    """Where the client's connection stands."""

    CONNECTING = "connecting"
    """The first connection is being made."""
    CONNECTED = "connected"
    """Registered, the stream open and its handshake done: events flow."""
    RECONNECTING = "reconnecting"
    """A connection was lost (or an attempt failed); waiting out the backoff or retrying."""
    CLOSED = "closed"
    """Closed for good, by ``aclose()`` or a fatal error. Final."""


_ALLOWED: dict[ConnectionStatus, frozenset[ConnectionStatus]] = {
    ConnectionStatus.CONNECTING: frozenset(
        {ConnectionStatus.CONNECTED, ConnectionStatus.RECONNECTING, ConnectionStatus.CLOSED}
    ),
    ConnectionStatus.CONNECTED: frozenset({ConnectionStatus.RECONNECTING, ConnectionStatus.CLOSED}),
    ConnectionStatus.RECONNECTING: frozenset({ConnectionStatus.CONNECTED, ConnectionStatus.CLOSED}),
    ConnectionStatus.CLOSED: frozenset(),
}

StateListener = Callable[[ConnectionStatus, ConnectionStatus], None]
"""``listener(old, new)``, called synchronously on every change; must not block or raise."""


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """The delay between reconnect attempts.

    Attributes:
        initial: the delay after the first failure, in seconds.
        maximum: the cap, in seconds.
        multiplier: growth per further failure.
        jitter: the fraction (0..1) of a delay that is taken off at random.
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise InvalidArgument("Backoff needs 0 < initial <= maximum")
        if self.multiplier < 1:
            raise InvalidArgument(f"Backoff.multiplier must be >= 1, not {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise InvalidArgument(f"Backoff.jitter must be in 0..1, not {self.jitter}")

    def delay(self, failures: int, *, rng: random.Random | None = None) -> float:
        """The delay after ``failures`` consecutive failures (1 for the first)."""
        # Capped before it can overflow: 2.0 ** 2000 is an OverflowError, not a large float.
        exponent = min(max(failures - 1, 0), 64)
        base = min(self.maximum, self.initial * self.multiplier**exponent)
        r = (rng or random).random()
        return base * (1.0 - self.jitter * r)


class ReconnectStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of a :class:`Reconnector`.

    Attributes:
        status: the status now.
        attempts: connection attempts made, successful or not.
        connects: attempts that reached ``CONNECTED``.
        failures: consecutive failed attempts since the last connection.
        last_error: the latest failure, in words (``""`` if none).
    """

    status: ConnectionStatus
    attempts: int
    connects: int
    failures: int
    last_error: str


class Wait(msgspec.Struct, frozen=True, kw_only=True):
    """A failed attempt that is worth waiting out rather than a fault: the next attempt comes
    after ``delay`` (``None``: the backoff's), and ``line`` is logged at WARNING instead of the
    usual one, once per ``kind`` in a row (the tries after it at DEBUG)."""

    kind: str
    line: str
    delay: float | None = None


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


class Reconnector:
    """Runs connection attempts one at a time, with backoff, and tracks the status.

    Args:
        backoff: the delays between attempts.
        rng: the jitter's random source (seed it in tests).
        target: what is connected to (``host:port``), for the log lines.
        name: who connects (the agent id), for the log lines.
        describe: a failure in a few words on one line (default ``Type: message``).
    """

    def __init__(
        self,
        backoff: Backoff | None = None,
        *,
        rng: random.Random | None = None,
        target: str = "the server",
        name: str = "",
        describe: Callable[[Exception], str] | None = None,
    ):
        self.backoff = backoff if backoff is not None else Backoff()
        self._rng = rng
        self._target = target
        self._name = name
        self._describe = describe if describe is not None else _describe
        self._status = ConnectionStatus.CONNECTING
        self._listeners: list[StateListener] = []
        self._changed = anyio.Event()
        self._attempts = 0
        self._connects = 0
        self._failures = 0
        self._last_error = ""
        self._running = False
        self._wake: anyio.Event | None = None

    @property
    def status(self) -> ConnectionStatus:
        return self._status

    @property
    def closed(self) -> bool:
        """Whether the status is ``CLOSED`` (which an attempt in progress may have set)."""
        return self._status is ConnectionStatus.CLOSED

    def statistics(self) -> ReconnectStatistics:
        return ReconnectStatistics(
            status=self._status,
            attempts=self._attempts,
            connects=self._connects,
            failures=self._failures,
            last_error=self._last_error,
        )

    def add_listener(self, listener: StateListener) -> None:
        """Call ``listener(old, new)`` on every status change from now on."""
        self._listeners.append(listener)

    def _set(self, new: ConnectionStatus) -> None:
        old = self._status
        if new is old:
            return
        if new not in _ALLOWED[old]:
            raise RuntimeError(f"invalid connection status change {old.value} -> {new.value}")
        self._status = new
        changed, self._changed = self._changed, anyio.Event()
        changed.set()
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:
                log.exception("connection status listener failed")

    async def wait_status(self, *wanted: ConnectionStatus) -> ConnectionStatus:
        """Wait until the status is one of ``wanted`` (returns at once if it is)."""
        while self._status not in wanted:
            await self._changed.wait()
        return self._status

    def close(self) -> None:
        """Enter ``CLOSED`` (idempotent); a backoff sleep in progress ends at once."""
        self._set(ConnectionStatus.CLOSED)
        if self._wake is not None:
            self._wake.set()

    async def run(
        self,
        attempt: Callable[[Callable[[], None]], Awaitable[None]],
        *,
        fatal: Callable[[Exception, bool], bool],
        wait: Callable[[Exception], Wait | None] | None = None,
    ) -> None:
        """Run ``attempt`` again and again until closed.

        ``attempt(connected)`` makes one connection and runs it until it ends; it calls
        ``connected()`` once the connection is established. Its return or its exception
        ends the connection; the loop then backs off and tries again. ``fatal(exc,
        ever_connected)`` says which exceptions end the loop instead: they enter ``CLOSED``
        and propagate. ``wait(exc)`` (asked of the others) may make one a :class:`Wait`.
        Cancellation ends the loop as well (``CLOSED``).
        """
        if self._running:
            raise RuntimeError("Reconnector.run is already running")
        self._running = True
        ever = False
        fatal_end = False  # ended by a fatal error: its own line says so, not ours
        logged = ""  # the failure last logged at WARNING: the same again goes to DEBUG
        target, as_name = self._target, f" as {self._name}" if self._name else ""
        log.info("connecting to %s", target)
        try:
            while self._status is not ConnectionStatus.CLOSED:
                self._attempts += 1
                established = False
                waiting: Wait | None = None

                def connected() -> None:
                    nonlocal established, ever, logged
                    log.info("%s to %s%s", "reconnected" if ever else "connected", target, as_name)
                    established = ever = True
                    logged = ""
                    self._connects += 1
                    self._failures = 0
                    if self._status is not ConnectionStatus.CLOSED:
                        self._set(ConnectionStatus.CONNECTED)

                try:
                    await attempt(connected)
                    reason = "the connection ended"
                except Exception as exc:
                    if self.closed:
                        break
                    reason = self._describe(exc)
                    if fatal(exc, ever):
                        self._last_error = reason
                        fatal_end = True
                        raise
                    waiting = wait(exc) if wait is not None else None
                if self.closed:
                    break
                self._last_error = reason
                self._failures = 1 if established else self._failures + 1
                self._set(ConnectionStatus.RECONNECTING)
                delay = self.backoff.delay(self._failures, rng=self._rng)
                if waiting is not None and waiting.delay is not None:
                    delay = waiting.delay
                if waiting is not None and waiting.kind != logged:
                    log.warning("%s", waiting.line)
                    logged = waiting.kind
                elif waiting is not None:
                    log.debug("cannot connect to %s: %s; retrying in %.1f s", target, reason, delay)
                elif established:
                    log.warning(
                        "connection to %s lost: %s; reconnecting in %.1f s", target, reason, delay
                    )
                else:
                    level = logging.DEBUG if reason == logged else logging.WARNING
                    log.log(
                        level, "cannot connect to %s: %s; retrying in %.1f s", target, reason, delay
                    )
                    logged = reason
                self._wake = anyio.Event()
                with anyio.move_on_after(delay):
                    await self._wake.wait()  # close() cuts the delay short
                self._wake = None
        finally:
            self._running = False
            if self._status is not ConnectionStatus.CLOSED:
                self._set(ConnectionStatus.CLOSED)
            if ever and not fatal_end:
                log.info("disconnected from %s", target)
