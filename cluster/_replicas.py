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

import nats.js.errors
from nats.aio.client import Client

__all__ = ["CLUSTER_REPLICAS", "with_replicas"]

log = logging.getLogger("loom.cluster")

CLUSTER_REPLICAS: Final = 3

T = TypeVar("T")


def clustered(client: Client) -> bool:
    """Whether the server ``client`` is connected to belongs to a NATS cluster (its INFO
    names one)."""
    # nats-py keeps the server's INFO only in this attribute.
    return bool(client._server_info.get("cluster"))


async def with_replicas(client: Client, what: str, make: Callable[[int], Awaitable[T]]) -> T:
    """``make(replicas)`` with three replicas on a NATS cluster, else (or if the cluster
    cannot place three) with one.

    Raises:
        nats.js.errors.APIError: ``make`` failed otherwise.
    """
    if not clustered(client):
        return await make(1)
    try:
        return await make(CLUSTER_REPLICAS)
    except nats.js.errors.APIError as exc:
        if exc.err_code not in _NO_ROOM:
            raise
        log.warning(
            "nats: %s kept in one copy: the NATS cluster cannot place %d (%s); the server "
            "that holds it is one that must not die",
            what,
            CLUSTER_REPLICAS,
            exc.description,
        )
        return await make(1)


# JetStream's answers for "not that many replicas here": insufficient resources, no suitable
# peers, replicas > 1 not supported in non-clustered mode.
_NO_ROOM: Final = frozenset({10023, 10005, 10074})
