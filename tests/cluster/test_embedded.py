"""The embedded nats-server and the connection to it, with real processes: JetStream
answers, a SIGKILLed server is restarted on its port while a publish waits, stopping leaves
nothing behind, and a server that cannot start says why."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from loom.cluster import (
    ConnectionState,
    EmbeddedNats,
    NatsConnectFailed,
    NatsConnection,
    NatsServerFailed,
    NatsServerNotFound,
    NatsSettings,
    find_nats_server,
    open_nats,
)

pytestmark = pytest.mark.anyio


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110  (process state has no event to wait on)
            await anyio.sleep(0.01)


async def test_embedded_server_answers_jetstream(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with EmbeddedNats(tmp_path / "nats") as server:
            assert server.url.startswith("nats://127.0.0.1:")
            assert server.port > 0
            settings = NatsSettings(servers=(server.url,), token=server.token)
            async with NatsConnection(settings) as conn:
                js = conn.jetstream
                await js.add_stream(name="ORDERS", subjects=["orders.>"])
                ack = await js.publish("orders.new", b"seven")
                stored = await js.get_msg("ORDERS", ack.seq)
                assert stored.data == b"seven"
            # JetStream keeps its files under the store directory, the token in a private file.
            assert (tmp_path / "nats" / "jetstream").is_dir()
            assert (tmp_path / "nats" / "loom-nats.conf").stat().st_mode & 0o077 == 0


async def test_the_embedded_server_wants_its_token(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with EmbeddedNats(tmp_path / "nats") as server:
            settings = NatsSettings(servers=(server.url,), connect_timeout_s=2)
            with pytest.raises(NatsConnectFailed, match="authorization violation"):
                async with NatsConnection(settings):
                    pass


async def test_sigkill_of_the_server_restarts_it_and_a_publish_waits(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with open_nats("embedded", store_dir=tmp_path / "nats") as engine:
            assert engine.server is not None
            assert engine.connection is not None
            conn, server = engine.connection, engine.server
            js = conn.jetstream
            await js.add_stream(name="EVENTS", subjects=["events.>"])
            await js.publish("events.a", b"before")
            url, first = server.url, server.pid
            assert first is not None

            os.kill(first, signal.SIGKILL)
            await wait_until(lambda: conn.state is ConnectionState.RECONNECTING)
            # Issued while the server is down: held by the client, stored after the restart.
            ack = await js.publish("events.a", b"while down", timeout=20)

            assert server.restarts == 1
            assert server.pid not in (None, first)
            assert server.url == url  # restarted on the same port: clients find it
            assert conn.connected
            assert conn.reconnects == 1
            assert (await js.get_msg("EVENTS", ack.seq)).data == b"while down"
            assert (await js.stream_info("EVENTS")).state.messages == 2  # nothing lost
            status = engine.status()
            assert (status.mode, status.restarts, status.connected) == ("embedded", 1, True)


async def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with EmbeddedNats(tmp_path / "nats") as server:
            pid = server.pid
            assert pid is not None
            assert not gone(pid)
        assert gone(pid)
        assert server.pid is None


async def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    # A "server" that exits at once: the first start fails with its exit, nothing retried.
    fake = tmp_path / "nats-server"
    fake.write_text("#!/bin/sh\necho 'cannot listen: no reason' >&2\nexit 3\n")
    fake.chmod(0o755)
    with anyio.fail_after(30), pytest.raises(NatsServerFailed) as caught:
        async with EmbeddedNats(tmp_path / "nats", binary=fake):
            pass
    assert "exited with code 3 before it was ready" in str(caught.value)
    assert "cannot listen: no reason" in str(caught.value)


async def test_one_store_one_server(tmp_path: Path) -> None:
    # nats-server itself would share the directory, and both would write JetStream's files.
    with anyio.fail_after(30):
        async with EmbeddedNats(tmp_path / "nats"):
            with pytest.raises(NatsServerFailed, match="is in use by another embedded"):
                async with EmbeddedNats(tmp_path / "nats"):
                    pass
        async with EmbeddedNats(tmp_path / "nats") as again:  # released on stop
            assert again.pid is not None


def test_no_binary_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(NatsServerNotFound) as caught:
        find_nats_server(tmp_path / "missing")
    message = str(caught.value)
    assert "--nats URL" in message
    assert "--nats off" in message
    assert "PATH" in message
    assert find_nats_server().name == "nats-server"  # the wheel's, next to this Python
