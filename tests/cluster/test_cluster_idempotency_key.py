"""A tool call's idempotency key crosses cluster nodes (``CallRequest.headers``): the agent's
capability on the other node receives it, on a real nats-server."""

from __future__ import annotations

import anyio
import pytest

from loom import Agent, capability
from loom.runtime.resilience import current_idempotency_key

from .conftest import NatsServerProcess
from .test_cluster_directory import node, wait_until

pytestmark = pytest.mark.anyio


@capability("key.echo")
async def echo_key() -> str:
    """The idempotency key the call arrived with."""
    return current_idempotency_key() or "no key"


async def test_the_key_reaches_a_capability_on_another_node(
    nats_server: NatsServerProcess,
) -> None:
    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            await b.runtime.start(Agent("echoer", capabilities=[echo_key]))
            await wait_until(lambda: bool(a.runtime.directory.by_capability("key.echo")))
            keyed = await a.runtime.call_tool("key.echo", {}, idempotency_key="order-9")
            unkeyed = await a.runtime.call_tool("key.echo", {})
    assert (keyed, unkeyed) == ("order-9", "no key")
