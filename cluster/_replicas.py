"""How many copies JetStream keeps of what Loom stores (the durable events' stream, the
directory's bucket).

One copy lives on one server: in a NATS cluster, the death of that server would take the
durable backlog and the directory with it while the nodes fail over to the others. So on a
NATS cluster Loom asks for three replicas (a raft group: any one server may die, and a
majority of the three keeps serving). A single server cannot hold more than one copy, and a
cluster of two cannot place three: there it falls back to one copy, said in a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import anyio
import nats.js.errors
from nats.aio.client import Client

__all__ = ["CLUSTER_REPLICAS", "with_replicas"]

log = logging.getLogger("loom.cluster")

CLUSTER_REPLICAS: Final = 3

# How long a placement that finds a server offline is asked again before one copy is kept.
OFFLINE_WAIT_S: Final = 10.0
_RETRY_S: Final = 0.25

T = TypeVar("T")


def clustered(client: Client) -> bool:
    """Whether the server ``client`` is connected to belongs to a NATS cluster (its INFO
    names one)."""
    # nats-py keeps the server's INFO only in this attribute.
    return bool(client._server_info.get("cluster"))


async def with_replicas(client: Client, what: str, make: Callable[[int], Awaitable[T]]) -> T:
    """``make(replicas)`` with three replicas on a NATS cluster, else (or if the cluster
    cannot place three) with one. A placement refused because a server is offline is asked
    again for up to :data:`OFFLINE_WAIT_S` first (a cluster that has just formed).

    Raises:
        nats.js.errors.APIError: ``make`` failed otherwise.
    """
    if not clustered(client):
        return await make(1)
    waited = 0.0
    while True:
        try:
            return await make(CLUSTER_REPLICAS)
        except nats.js.errors.APIError as exc:
            if exc.err_code not in _NO_ROOM:
                raise
            # "peer offline": a server of the cluster not (yet) seen by the meta leader, as
            # in the first moments of a cluster that has just formed. Falling back at once
            # kept the stream in one copy on a cluster of three, or failed the node's start
            # when the three-copy create went through after all ("already in use with a
            # different configuration"): the placement is asked again for a while first.
            if "offline" in (exc.description or "") and waited < OFFLINE_WAIT_S:
                await anyio.sleep(_RETRY_S)
                waited += _RETRY_S
                continue
            failure = exc
            break
    log.warning(
        "nats: %s kept in one copy: the NATS cluster cannot place %d (%s); the server "
        "that holds it is one that must not die",
        what,
        CLUSTER_REPLICAS,
        failure.description,
    )
    return await make(1)


# JetStream's answers for "not that many replicas here": insufficient resources, no suitable
# peers, replicas > 1 not supported in non-clustered mode.
_NO_ROOM: Final = frozenset({10023, 10005, 10074})
