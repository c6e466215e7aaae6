"""Who a caller is and what it may publish and read (issue 17, items 4 to 6): the sender is
the authenticated identity at every entry point, the server's topics are the server's,
mailboxes are private, a held agent id needs its registration secret, weak tokens are refused
off loopback."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import grpc
import pytest

from loom.bridge import (
    AdminClient,
    AgentReleased,
    BridgeServer,
    ConnectionEnded,
    WeakToken,
    WrongAgent,
    token_weakness,
)
from loom.bridge._client import AgentRegistration, BridgeClient
from loom.bridge._generated import bridge_pb2, bus_pb2, event_pb2, tools_pb2
from loom.bridge._identity import OPERATOR, Principal, reaches_other_mailboxes
from loom.runtime import AgentRuntime, Event, EventBus, Subscription
from loom.runtime.tools import FunctionTool, ToolRegistry

from ._client_support import FAST
from ._server_harness import OldAgent, Served, auth, channel, event, serving, status_of
from .test_server_security import PKI

pytestmark = pytest.mark.anyio

TOKEN = "shared-token"
ADMIN = "admin-token"
SECRET = "loom-agent-secret"
STRONG = "kX9-vQ2_mB7zR4tL0pWc8Ye3"


def _publish(topic: str, ev: event_pb2.Event) -> bus_pb2.PublishRequest:
    return bus_pb2.PublishRequest(publishes=[bridge_pb2.Publish(topic=topic, event=ev)])


def _claiming(sender: str, *, spelling: str = "envelope", correlation: str = "") -> event_pb2.Event:
    if spelling == "envelope":
        envelope = event_pb2.Envelope(sender=sender, correlation_id=correlation)
        return event("forged", envelope=envelope)
    return event("forged", metadata={spelling: sender, "correlation_id": correlation})


async def _nothing_on(sub: Subscription) -> None:
    """Nothing is waiting in ``sub`` (what was refused never reached the bus)."""
    with pytest.raises(anyio.WouldBlock):
        sub.receive_nowait()


# ------------------------------------------------------------------ item 4: the sender


async def test_eventbus_publish_cannot_claim_an_agent() -> None:
    async with serving(token=TOKEN) as s, channel(s.target) as ch:
        victim = await OldAgent(ch, "victim", metadata=auth(TOKEN)).connect()
        forger = OldAgent(ch, "nobody", metadata=auth(TOKEN))
        async with s.bus.subscribe("orders.>") as seen:
            for spelling in ("envelope", "sender", "loom.sender"):
                answer = await forger.bus.Publish(
                    _publish("orders.new", _claiming("victim", spelling=spelling)),
                    metadata=auth(TOKEN),
                )
                assert answer.accepted == 0, spelling
                (rejection,) = answer.rejections
                assert rejection.code == "PERMISSION_DENIED"
                assert "cannot publish as 'victim'" in rejection.reason
            await _nothing_on(seen)
            # Without a claim it goes out, in nobody's name.
            answer = await forger.bus.Publish(
                _publish("orders.new", event("plain")), metadata=auth(TOKEN)
            )
            assert answer.accepted == 1
            with anyio.fail_after(5):
                got = await seen.receive()
            assert got.event.envelope.sender == ""
        await victim.close()


async def test_a_forged_reply_never_reaches_the_requester() -> None:
    async with serving(token=TOKEN) as s, channel(s.target) as ch:
        requester = await OldAgent(ch, "asker", metadata=auth(TOKEN)).connect()
        intruder = await OldAgent(ch, "intruder", metadata=auth(TOKEN)).connect()
        replier = await OldAgent(ch, "replier", metadata=auth(TOKEN)).connect()
        forged = _claiming("replier", correlation="c-1")
        # On a stream: refused with an err frame, nothing published.
        await intruder.publish("agent.asker.replies", forged)
        frame = await intruder.next("err")
        assert frame.err.code == "PERMISSION_DENIED"
        # Through EventBus.Publish: refused likewise.
        answer = await intruder.bus.Publish(
            _publish("agent.asker.replies", forged), metadata=auth(TOKEN)
        )
        assert [r.code for r in answer.rejections] == ["PERMISSION_DENIED"]
        # The genuine reply is the first thing the requester sees, in its sender's name.
        await replier.publish(
            "agent.asker.replies", event("reply", metadata={"correlation_id": "c-1"})
        )
        got = await requester.next("delivery")
        assert got.delivery.event.type == "reply"
        assert got.delivery.event.metadata["sender"] == "replier"
        for agent in (requester, intruder, replier):
            await agent.close()


@pytest.mark.parametrize("topic", ["loom.lifecycle.victim", "loom.dlq.victim", "loom.lifecycle"])
async def test_server_topics_are_the_servers_alone(topic: str) -> None:
    async with serving(admin_token=ADMIN) as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "victim").connect()
        failed = event("agent.failed", payload=b'{"status": "failed"}')
        async with s.bus.subscribe(f"{topic}.>") as under, s.bus.subscribe(topic) as exact:
            await agent.publish(topic, failed)
            assert (await agent.next("err")).err.code == "PERMISSION_DENIED"
            answer = await agent.bus.Publish(_publish(topic, failed))
            assert [r.code for r in answer.rejections] == ["PERMISSION_DENIED"]
            # Not the operator either; and the CLI's publish (AdminClient) gets the same.
            async with AdminClient(s.target, token=ADMIN) as admin:
                outcome = await admin.publish(topic, [Event(type="agent.failed")])
            assert outcome.accepted == 0
            assert outcome.rejections[0].code == "PERMISSION_DENIED"
            assert "only the server" in outcome.rejections[0].reason
            await agent.ping(2)  # everything before it was handled
            await _nothing_on(under)
            await _nothing_on(exact)
        await agent.close()


async def test_dead_letters_only_in_ones_own_name() -> None:
    async with serving() as s, channel(s.target) as ch:
        agent = await OldAgent(ch, "writer").connect()
        async with s.bus.subscribe("loom.deadletter.>") as letters:
            await agent.publish("loom.deadletter.other", event("dead"))
            assert (await agent.next("err")).err.code == "PERMISSION_DENIED"
            await agent.publish("loom.deadletter.writer", event("dead"))
            with anyio.fail_after(5):
                got = await letters.receive()
            assert (got.topic, got.event.envelope.sender) == ("loom.deadletter.writer", "writer")
        await agent.close()


async def test_tool_calls_cannot_claim_an_agent() -> None:
    async def echo(text: str) -> str:
        return text

    schema = {"type": "object", "properties": {"text": {"type": "string"}}}
    tools = ToolRegistry()
    tools.register(FunctionTool(echo, name="echo", description="Echo.", parameters_schema=schema))
    async with serving(tools=tools) as s, channel(s.target) as ch:
        caller = OldAgent(ch, "caller")
        call = tools_pb2.ToolCall(
            name="echo", arguments='{"text": "hi"}', headers={"loom.sender": "someone"}
        )
        for rpc in (caller.tools.Call, caller.bridge.ForwardToolCall):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await rpc(call)
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "cannot call a tool as 'someone'" in str(info.value.details())
        del call.headers["loom.sender"]
        assert (await caller.tools.Call(call)).output == '"hi"'


async def test_a_bound_certificate_publishes_as_the_agent_it_names(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    cert, key = pki.issue("agent-a")
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.pem["ca"], certificate_chain=cert, private_key=key
    )
    async with (
        serving(tls=pki.server_tls(mutual=True, bind=True)) as s,
        channel(s.target, credentials=creds) as ch,
    ):
        client = OldAgent(ch, "agent-a")
        async with s.bus.subscribe("bound.>") as seen:
            answer = await client.bus.Publish(_publish("bound.x", _claiming("agent-b")))
            assert [r.code for r in answer.rejections] == ["PERMISSION_DENIED"]
            answer = await client.bus.Publish(_publish("bound.x", event("mine")))
            assert answer.accepted == 1
            with anyio.fail_after(5):
                got = await seen.receive()
            assert got.event.envelope.sender == "agent-a"  # the certificate's, filled in


# ------------------------------------------------------------------ item 5: mailboxes


async def test_another_agents_mailbox_cannot_be_subscribed() -> None:
    async with serving(token=TOKEN, admin_token=ADMIN) as s, channel(s.target) as ch:
        owner = await OldAgent(ch, "owner", metadata=auth(TOKEN)).connect()
        snoop = await OldAgent(ch, "snoop", metadata=auth(TOKEN)).connect()
        for pattern in ("agent.owner.replies", "agent.owner.replies.rpc", "agent.owner.replies.>"):
            request = bridge_pb2.SubscribeRequest(request_id=pattern, pattern=pattern)
            await snoop.send(bridge_pb2.ClientEvent(subscribe=request))
            result = (await snoop.next("subscription")).subscription
            assert (result.ok, result.code) == (False, "PERMISSION_DENIED"), pattern
            call = snoop.bus.Subscribe(request, metadata=auth(TOKEN))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "read by that agent alone" in str(info.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await OldAgent(ch, "snoop2", metadata=auth(TOKEN)).register(
                topics=["agent.owner.replies.rpc"]
            )
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        # The operator reads it.
        async with (
            AdminClient(s.target, token=ADMIN) as admin,
            admin.subscribe("agent.owner.replies") as deliveries,
        ):
            await snoop.publish("agent.owner.replies", event("for-owner"))
            with anyio.fail_after(5):
                got = await anext(aiter(deliveries))
            assert got.event.type == "for-owner"
        assert (await owner.next("delivery")).delivery.event.type == "for-owner"
        await owner.close()
        await snoop.close()


async def test_wildcards_withhold_other_agents_mailboxes() -> None:
    async with serving(token=TOKEN, admin_token=ADMIN) as s, channel(s.target) as ch:
        owner = await OldAgent(ch, "owner", metadata=auth(TOKEN)).connect()
        watcher = await OldAgent(ch, "watcher", metadata=auth(TOKEN)).connect(topics=[">"])
        async with (
            AdminClient(s.target, token=TOKEN) as plain,
            plain.subscribe(">") as everything,
            AdminClient(s.target, token=ADMIN) as admin,
            admin.subscribe("agent.*.replies") as mailboxes,
        ):
            await s.bus.publish("agent.owner.replies", Event(type="secret"))
            await s.bus.publish("agent.watcher.replies", Event(type="own"))
            await s.bus.publish("public.news", Event(type="news"))
            # The owner gets its mailbox; the watcher its own mailbox and the news; a plain
            # EventBus subscriber (no agent) the news only; the operator every mailbox.
            assert (await owner.next("delivery")).delivery.event.type == "secret"
            types = [(await watcher.next("delivery")).delivery.event.type for _ in range(2)]
            assert types == ["own", "news"]
            with anyio.fail_after(5):
                assert (await anext(aiter(everything))).event.type == "news"
                seen = [(await anext(aiter(mailboxes))).event.type for _ in range(2)]
            assert seen == ["secret", "own"]
            await watcher.ping(9)  # nothing else was sent to the watcher
        # Subscriptions made on the stream are filtered alike: one joining the mailbox, one
        # with a buffer of its own (written by a pump of its own).
        dyn = await OldAgent(ch, "dyn", metadata=auth(TOKEN)).connect()
        for pattern, size in (("agent.>", 0), ("agent.*.replies", 8)):
            request = bridge_pb2.SubscribeRequest(pattern=pattern, buffer_size=size)
            await dyn.send(bridge_pb2.ClientEvent(subscribe=request))
            assert (await dyn.next("subscription")).subscription.ok
        await s.bus.publish("agent.owner.replies", Event(type="secret"))
        await s.bus.publish("agent.owner.stream", Event(type="public"))
        await s.bus.publish("agent.dyn.replies", Event(type="own"))
        got = sorted([(await dyn.next("delivery")).delivery.event.type for _ in range(3)])
        assert got == ["own", "own", "public"]
        await dyn.ping(10)
        assert (await owner.next("delivery")).delivery.event.type == "secret"
        await dyn.close()
        await owner.close()
        await watcher.close()


async def _register(ch: grpc.aio.Channel, agent_id: str, secret: str | None = None) -> str:
    agent = OldAgent(ch, agent_id, metadata=() if secret is None else ((SECRET, secret),))
    return (await agent.register()).registration_secret


async def _stream(
    ch: grpc.aio.Channel, agent_id: str, secret: str | None
) -> tuple[OldAgent, grpc.aio.StreamStreamCall[bridge_pb2.ClientEvent, bridge_pb2.ServerEvent]]:
    agent = OldAgent(ch, agent_id, metadata=() if secret is None else ((SECRET, secret),))
    call = await agent.open(handshake=False)
    await agent.send(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id=agent_id)))
    return agent, call


async def test_a_held_id_needs_its_secret() -> None:
    async with serving() as s, channel(s.target) as ch:
        secret = await _register(ch, "owned")
        assert len(secret) >= 32
        owner, _ = await _stream(ch, "owned", secret)
        await owner.ping(1)
        await owner.close()
        await _wait_gone(s, "owned")
        # 5 ms after the owner left: neither registering again nor reopening works without it.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _register(ch, "owned")
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "loom agents release owned" in str(info.value.details())
        # And when the id is free again, for a client that would rather wait.
        held = dict(info.value.trailing_metadata() or ())["loom-agent-held-ms"]
        assert 14_000 < int(held) <= 15_000, held
        for wrong in (None, "not-the-secret"):
            _, call = await _stream(ch, "owned", wrong)
            code, details = await status_of(call)
            assert code is grpc.StatusCode.PERMISSION_DENIED, details
        # The owner comes back with it, and keeps it.
        assert await _register(ch, "owned", secret) == secret
        owner, _ = await _stream(ch, "owned", secret)
        await owner.ping(2)
        await owner.close()


async def test_a_secret_shown_first_is_adopted_if_strong() -> None:
    async with serving() as s, channel(s.target) as ch:
        assert await _register(ch, "proposer", STRONG) == STRONG
        weak = await _register(ch, "weakling", "aaaaaaaaaaaaaaaaaaaa")
        assert weak != "aaaaaaaaaaaaaaaaaaaa"
        # A process restarted by its supervisor shows the same secret and takes the id back.
        first, _ = await _stream(ch, "proposer", STRONG)
        await first.ping(1)
        await first.close()
        await _wait_gone(s, "proposer")
        assert await _register(ch, "proposer", STRONG) == STRONG
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _register(ch, "proposer", STRONG[::-1])  # a strong secret, but not its own
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_an_old_client_is_bound_to_its_stream_only() -> None:
    async with serving() as s, channel(s.target) as ch:
        first = await OldAgent(ch, "legacy").connect()
        await first.close()
        await _wait_gone(s, "legacy")
        second = await OldAgent(ch, "legacy").connect()  # as before: the id is free again
        await second.close()


async def test_the_hold_ends_after_the_liveness_window() -> None:
    async with serving(stale_after_s=0.3) as s, channel(s.target) as ch:
        secret = await _register(ch, "brief")
        owner, _ = await _stream(ch, "brief", secret)
        await owner.ping(1)
        await owner.close()
        await _wait_gone(s, "brief")
        with pytest.raises(grpc.aio.AioRpcError):
            await _register(ch, "brief")
        codes = []
        with anyio.fail_after(5):
            while True:
                try:
                    await _register(ch, "brief")
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code())
                    await anyio.sleep(0.05)
                else:
                    break
        assert set(codes) <= {grpc.StatusCode.PERMISSION_DENIED}


async def test_a_final_report_gives_the_id_up() -> None:
    # The agent stopped for good (a clean stop of its process): nobody is coming back for the
    # id, so a process started again does not wait out the liveness window.
    async with serving() as s, channel(s.target) as ch:
        secret = await _register(ch, "leaving")
        owner, _ = await _stream(ch, "leaving", secret)
        hello = bridge_pb2.StreamHello(features=[bridge_pb2.STREAM_FEATURE_SUPERVISION])
        await owner.send(bridge_pb2.ClientEvent(hello=hello))
        await owner.next("welcome")
        stopped = bridge_pb2.AgentReport(status="stopped")
        await owner.send(bridge_pb2.ClientEvent(report=stopped))
        await owner.next("released")
        await owner.close()
        await _wait_gone(s, "leaving")
        assert await _register(ch, "leaving") != secret  # no secret shown, and taken


async def test_release_frees_a_held_id() -> None:
    async with serving(token=TOKEN, admin_token=ADMIN) as s, channel(s.target) as ch:
        md = auth(TOKEN)
        secret = (await OldAgent(ch, "stuck", metadata=md).register()).registration_secret
        owner = OldAgent(ch, "stuck", metadata=(*md, (SECRET, secret)))
        await owner.open()
        async with AdminClient(s.target, token=TOKEN) as plain:
            with pytest.raises(WrongAgent, match="admin token"):
                await plain.release_agent("stuck")
        assert "stuck" in s.server.hub.sessions
        async with AdminClient(s.target, token=ADMIN) as admin:
            assert await admin.release_agent("stuck")
            assert not await admin.release_agent("stuck")  # idempotent
        assert owner.call is not None
        code, details = await status_of(owner.call)
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert "released by an operator" in details
        await OldAgent(ch, "stuck", metadata=md).connect()  # anyone may take it now


async def test_our_client_released_while_connected_ends_with_agent_released() -> None:
    # Not "cannot connect": it was connected, and the operator ended it; it does not come
    # back for the id (the server said so in a trailer, not only in words).
    async with serving(admin_token=ADMIN) as s:
        registration = AgentRegistration(agent_id="kicked", topics=("k.in",))
        async with BridgeClient(s.server.address, registration, options=FAST) as agent:
            async with AdminClient(s.target, token=ADMIN) as admin:
                assert await admin.release_agent("kicked")
            with anyio.fail_after(5), pytest.raises(AgentReleased) as info:
                await agent.wait_closed()
        assert str(info.value) == (
            f"agent 'kicked' was released by the operator of {s.server.address}: its "
            "connection ended and it does not reconnect"
        )
        assert isinstance(info.value, ConnectionEnded)
        assert info.value.code == "PERMISSION_DENIED"
        assert agent.statistics().connects == 1  # it did not register again
        assert "kicked" not in s.server.hub.registrations


async def test_release_from_the_cli(tmp_path: Path) -> None:
    async with serving(admin_token=ADMIN) as s, channel(s.target) as ch:
        secret = await _register(ch, "cli-held")
        owner, _ = await _stream(ch, "cli-held", secret)
        await owner.ping(1)
        await owner.close()
        await _wait_gone(s, "cli-held")
        argv = [sys.executable, "-m", "loom.cli", "agents", "release", "cli-held"]
        argv += ["--address", s.target]
        refused = await anyio.run_process(argv, check=False)
        assert refused.returncode == 1
        assert b"admin token" in refused.stderr
        done = await anyio.run_process([*argv, "--token", ADMIN], check=False)
        assert done.returncode == 0, done.stderr
        assert b"released cli-held" in done.stdout
        await _register(ch, "cli-held")


async def test_our_client_keeps_its_secret_across_reconnects() -> None:
    async with serving() as s:
        registration = AgentRegistration(agent_id="keeper", topics=("k.in",))
        async with BridgeClient(s.server.address, registration, options=FAST) as agent:
            holder = s.server.hub.holders["keeper"]
            assert holder.held  # its stream showed the secret
            s.server.hub.sessions["keeper"].end(grpc.StatusCode.UNAVAILABLE, "test: cut")
            with anyio.fail_after(5):
                while agent.statistics().connects < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                await agent.wait_connected()
            holder = s.server.hub.holders["keeper"]
            assert holder.held  # registered again with the old secret, streaming with the new
            await s.bus.publish("k.in", Event(type="after"))
            with anyio.fail_after(5):
                assert (await agent.receive()).event.type == "after"
        async with channel(s.target) as ch:
            await _wait_gone(s, "keeper")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _register(ch, "keeper")
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def _wait_gone(s: Served, agent_id: str) -> None:
    with anyio.fail_after(5):
        while agent_id in s.server.hub.sessions:  # noqa: ASYNC110  (no event for it)
            await anyio.sleep(0.005)


# ------------------------------------------------------------------ item 6: weak tokens

WEAK: Sequence[tuple[str, str]] = (
    (" ", "whitespace"),
    ("s3cret", "6 characters, fewer than 16"),
    ("a" * 40, "repeat too much"),
    ("abab" * 8, "repeat too much"),
)


@pytest.mark.parametrize(("token", "why"), WEAK)
async def test_a_weak_token_is_refused_off_loopback(token: str, why: str) -> None:
    async with EventBus() as bus, AgentRuntime(bus) as runtime:
        with pytest.raises(WeakToken) as info:
            BridgeServer(runtime, host="0.0.0.0", token=token)
        message = str(info.value)
        assert why in message
        assert "secrets.token_urlsafe(32)" in message
        with pytest.raises(WeakToken, match="admin token is too weak"):
            BridgeServer(
                runtime, host="0.0.0.0", token="kX9-vQ2_mB7zR4tL0pWc8Ye3", admin_token=token
            )
        BridgeServer(runtime, host="127.0.0.1", token=token)  # loopback: as it likes


async def test_loom_serve_refuses_a_weak_token(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "loom.cli", "serve", "--host", "0.0.0.0", "--port", "0"]
    result = await anyio.run_process([*argv, "--token", " "], cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert b"token is too weak" in result.stderr
    assert b"secrets.token_urlsafe(32)" in result.stderr


# ------------------------------------------------------------------ the rule itself, pure


@pytest.mark.parametrize(
    ("pattern", "reaches"),
    [
        (">", True),
        ("agent.>", True),
        ("agent.*.replies", True),
        ("agent.*.replies.rpc", True),
        ("*.*.replies.>", True),
        ("agent.other.>", True),
        ("agent.me.>", False),
        ("agent.me.replies.>", False),
        ("agent.*", False),
        ("agent.*.stream", False),
        ("orders.>", False),
        ("loom.lifecycle.*", False),
    ],
)
def test_which_patterns_reach_other_mailboxes(pattern: str, reaches: bool) -> None:
    me = Principal.agent("me")
    assert reaches_other_mailboxes(me, pattern) is reaches
    assert not reaches_other_mailboxes(OPERATOR, pattern)


def test_generated_tokens_are_never_weak() -> None:
    for _ in range(200):
        assert token_weakness(secrets.token_urlsafe(32)) is None
        assert token_weakness(secrets.token_hex(16)) is None
        assert token_weakness(secrets.token_urlsafe(12)) is None  # 16 characters
