"""A tool's partial output across the nodes of a cluster, in one process: two nodes (a runtime
and a NATS connection each) on a real nats-server. The pieces of a capability of node b's agent
reach a caller on node a in order, before the result; only a caller with a sink is sent any;
a caller slower than the pieces holds at most ``MAX_TOOL_OUTPUT_PIECES`` and counts the rest."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from loom import Agent, capability
from loom.cluster._directory_wire import CallOutput, CallReply
from loom.runtime.lowlevel import MAX_TOOL_OUTPUT_PIECES
from loom.runtime.tools import stream_tool_output, tool_output_sink

from .conftest import NatsServerProcess
from .test_cluster_directory import node, wait_until

pytestmark = pytest.mark.anyio

# Set by the capability after its last piece (the test that waits for it puts one in).
streamed: list[anyio.Event] = []


@capability("pieces.count")
async def count(n: int) -> str:
    """Stream ``n`` pieces, then answer."""
    for i in range(n):
        await stream_tool_output(f"piece {i};")
    for done in streamed:
        done.set()
    return f"counted {n}"


async def test_the_pieces_of_a_call_to_another_node_come_in_order_before_its_result(
    nats_server: NatsServerProcess,
) -> None:
    seen: list[str] = []

    async def sink(text: str) -> None:
        seen.append(text)

    with anyio.fail_after(30):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            await b.runtime.start(Agent("counter", capabilities=[count]))
            await wait_until(lambda: bool(a.runtime.directory.by_capability("pieces.count")))
            with tool_output_sink(sink):
                result = await a.runtime.call_tool("pieces.count", {"n": 20}, timeout=10)
                # The result came after every piece: all of them are in the sink already.
                assert seen == [f"piece {i};" for i in range(20)]
            assert result == "counted 20"


async def test_a_caller_without_a_sink_is_sent_no_pieces(nats_server: NatsServerProcess) -> None:
    on_wire: list[Msg] = []

    async def watch(msg: Msg) -> None:
        on_wire.append(msg)

    with anyio.fail_after(30):
        spy = await nats.connect(nats_server.url)
        try:
            await spy.subscribe("_loom.reply.a.>", cb=watch)
            await spy.flush()
            async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
                await b.runtime.start(Agent("counter", capabilities=[count]))
                await wait_until(lambda: bool(a.runtime.directory.by_capability("pieces.count")))
                assert await a.runtime.call_tool("pieces.count", {"n": 5}) == "counted 5"
                await wait_until(lambda: len(on_wire) >= 1)
                await spy.flush()
        finally:
            await spy.close()
    # The answer, nothing before it: the provider streamed into no sink.
    assert [m.subject.endswith(".out") for m in on_wire] == [False]
    assert msgspec.msgpack.decode(on_wire[0].data, type=CallReply).output == '"counted 5"'


async def test_a_slow_caller_holds_a_bounded_number_of_pieces_and_counts_the_rest(
    nats_server: NatsServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    done = anyio.Event()
    streamed[:] = [done]
    total = MAX_TOOL_OUTPUT_PIECES * 3
    seen: list[str] = []
    let_go = anyio.Event()

    async def slow(text: str) -> None:
        seen.append(text)
        await let_go.wait()  # the caller takes nothing more until the provider is done

    out: list[str] = []
    with anyio.fail_after(30), caplog.at_level(logging.WARNING, logger="loom.cluster"):
        async with node(nats_server.url, "a") as a, node(nats_server.url, "b") as b:
            await b.runtime.start(Agent("counter", capabilities=[count]))
            await wait_until(lambda: bool(a.runtime.directory.by_capability("pieces.count")))
            calls = a.cluster.calls

            async def call() -> None:
                with tool_output_sink(slow):
                    out.append(await a.runtime.call_tool("pieces.count", {"n": total}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await done.wait()
                # Every piece and the answer are in node a: the call's buffer holds the bound.
                answered: Callable[[], bool] = lambda: any(  # noqa: E731
                    p.reply is not None for p in calls.pending.values()
                )
                await wait_until(answered)
                [pending] = calls.pending.values()
                assert pending.pieces is not None
                # (The bound's worth, or one fewer when the first piece was taken out
                # after the buffer had filled.)
                assert len(pending.pieces.items) in (
                    MAX_TOOL_OUTPUT_PIECES - 1,
                    MAX_TOOL_OUTPUT_PIECES,
                )
                let_go.set()
    assert out == [f"counted {total}"]
    # The first piece (taken before the sink stalled), then the bound's worth, in order:
    # what came while the buffer was full is dropped. (When the first piece was taken out
    # only after the buffer had filled, the one piece it made room for is a later one.)
    kept = len(seen)
    assert kept in (MAX_TOOL_OUTPUT_PIECES, MAX_TOOL_OUTPUT_PIECES + 1)
    numbers = [int(text.removeprefix("piece ").removesuffix(";")) for text in seen]
    assert numbers[:MAX_TOOL_OUTPUT_PIECES] == list(range(MAX_TOOL_OUTPUT_PIECES))
    assert numbers == sorted(set(numbers))
    assert f"{total - kept} pieces of its partial output dropped" in caplog.text


async def test_old_nodes_records_decode_and_a_piece_is_its_own_record() -> None:
    # A request of a node that predates partial output (no ``output``) decodes with none; a
    # piece is two fields, so nothing mistakes it for an answer on its own subject.
    from loom.cluster._directory_wire import CallRequest

    old = msgspec.msgpack.encode(["c1", "a", "agent", "t", "{}", 0, "_loom.reply.a.c1", {}])
    assert msgspec.msgpack.decode(old, type=CallRequest).output == ""
    piece = msgspec.msgpack.encode(CallOutput(id="c1", text="x"))
    assert msgspec.msgpack.decode(piece) == ["c1", "x"]


async def test_a_request_cannot_send_the_pieces_anywhere_but_its_reply_subject(
    nats_server: NatsServerProcess,
) -> None:
    from loom.cluster._directory_wire import CallRequest

    got: dict[str, list[bytes]] = {"reply": [], "elsewhere": []}

    async def on_reply(msg: Msg) -> None:
        got["reply"].append(msg.data)

    async def on_elsewhere(msg: Msg) -> None:
        got["elsewhere"].append(msg.data)

    with anyio.fail_after(30):
        spy = await nats.connect(nats_server.url)
        try:
            await spy.subscribe("_loom.reply.spy.c1", cb=on_reply)
            await spy.subscribe("elsewhere.>", cb=on_elsewhere)
            await spy.flush()
            async with node(nats_server.url, "b") as b:
                await b.runtime.start(Agent("counter", capabilities=[count]))
                request = CallRequest(
                    id="c1", caller="spy", agent="counter", tool="pieces.count",
                    arguments='{"n": 3}', timeout_ms=5000, reply="_loom.reply.spy.c1",
                    output="elsewhere.x",
                )  # fmt: skip
                await spy.publish("_loom.call.b", msgspec.msgpack.encode(request))
                await wait_until(lambda: bool(got["reply"]))
                await spy.flush()
        finally:
            await spy.close()
    assert msgspec.msgpack.decode(got["reply"][0], type=CallReply).output == '"counted 3"'
    assert got["elsewhere"] == []
