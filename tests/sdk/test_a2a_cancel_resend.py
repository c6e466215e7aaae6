"""A ``tasks/cancel`` whose ``cancel_turn`` frame is lost with the agent's stream (cut between
the frame and its arrival) is held by the server and sent again on the agent's next stream:
the turn that outlived its task's cancel stops when the agent comes back. Real processes: a
``loom serve``, an ``Agent.run`` agent process connected through a TCP relay the test cuts,
the scripted LLM server (OpenAI wire), the ``a2a-sdk``'s own client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import anyio
import anyio.abc
import pytest
from a2a.types import CancelTaskRequest, GetTaskRequest, StreamResponse, TaskState

from loom.runtime.testing import Delay, ScriptedLLMServer

from ..web._support import serve_http
from ._cli_support import running
from .test_a2a_bridge_agents import a2a_client, agent_process, message, until_working
from .test_budget_agents import calling

pytestmark = pytest.mark.anyio

WAIT = 60.0


class Relay:
    """A TCP relay to the server's gRPC port. :meth:`hold` stops carrying the server's bytes
    to the agent (what the server sends meanwhile never arrives); :meth:`cut` then closes
    every connection open now (those bytes are lost), and new ones are relayed as usual."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.address = ""
        self._open: set[anyio.CancelScope] = set()
        self._released = anyio.Event()  # set: the server's bytes go through
        self._released.set()
        self.connections = 0

    def hold(self) -> None:
        self._released = anyio.Event()

    def cut(self) -> None:
        for scope in list(self._open):
            scope.cancel()
        self._released.set()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Relay]:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.address = f"127.0.0.1:{port}"
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, self._relay)
            yield self
            tg.cancel_scope.cancel()

    async def _relay(self, agent: anyio.abc.SocketStream) -> None:
        self.connections += 1
        with anyio.CancelScope() as scope:
            self._open.add(scope)
            try:
                async with (
                    agent,
                    await anyio.connect_tcp(*self.target) as server,
                    anyio.create_task_group() as tg,
                ):
                    tg.start_soon(self._pump, agent, server, False)
                    tg.start_soon(self._pump, server, agent, True)
            finally:
                self._open.discard(scope)

    async def _pump(
        self, src: anyio.abc.SocketStream, dst: anyio.abc.SocketStream, downstream: bool
    ) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            while True:
                data = await src.receive()
                if downstream:
                    await self._released.wait()  # held: not read further, never sent
                await dst.send(data)


async def test_a_cancel_lost_with_the_stream_is_sent_again_when_the_agent_is_back(
    tmp_path: Path,
) -> None:
    mark = tmp_path / "marked"
    async with (
        ScriptedLLMServer() as llm,
        serve_http(tmp_path, "--nats", "off") as (server, address, url),
    ):
        # The model takes its time (longer than this test waits for the cancel); after the
        # delay it would call the tool `mark`.
        llm.push(Delay(seconds=WAIT, then=calling("mark")))
        root = f"{url}a2a/thinker/"
        relay = Relay(address)
        async with (
            relay.serving(),
            agent_process(tmp_path, relay.address, "thinker", llm.openai_base_url, str(mark)),
            running(
                *("tail", "agent.thinker.stream", "--type", "turn.end", "-a", address),
                cwd=tmp_path,
            ) as ends,
        ):
            with anyio.fail_after(WAIT):
                await ends.wait_for("tailing agent")
                await server.wait_for(r"A2A: exposing thinker \(connected with its card\)")
                async with a2a_client(root) as client:
                    updates = cast(
                        AsyncGenerator[StreamResponse, None],
                        client.send_message(message("Think, then mark.")),
                    )
                    task_id = await until_working(updates)
                    await llm.wait_requests(1)  # the turn is in its (slow) model call
                    # Nothing the server sends reaches the agent from now on...
                    relay.hold()
                    cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
                    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
                    await updates.aclose()
                # ... and the stream drops with the cancel frame unread: the agent reconnects.
                relay.cut()
                await server.wait_for(r"A2A: thinker left: no longer exposed")
                await server.wait_for(r"A2A: exposing thinker \(connected with its card\)", count=2)
                assert relay.connections >= 2
            # On its new stream the cancel comes again: the turn's model call is abandoned
            # well before its delay would end, and its turn.end says cancelled.
            with anyio.fail_after(WAIT / 2):
                await llm.wait_abandoned(1)
                await ends.wait_for(r"turn\.end .*cancelled")
                await server.wait_for(r"unconfirmed cancel of thread \S+ sent again")
            async with a2a_client(root) as client:
                got = await client.get_task(GetTaskRequest(id=task_id))
                assert got.status.state == TaskState.TASK_STATE_CANCELED
                assert not got.artifacts
            assert not mark.exists()  # the tool after the cancel point never ran
            assert len(llm.requests) == 1
        with anyio.fail_after(WAIT):
            assert await server.stop() == 0
            assert "Traceback" not in server.output
