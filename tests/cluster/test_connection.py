"""The server's NATS connection against real external servers: a lost server is reconnected
with one log line per change of state, and user/password and mutual TLS work or fail with
one clear reason."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import anyio
import pytest

from loom.cluster import ConnectionState, NatsConnectFailed, NatsConnection, NatsSettings

from ..bridge.test_server_security import PKI
from .conftest import start_nats_server
from .test_embedded import wait_until

pytestmark = pytest.mark.anyio


async def test_a_server_that_hangs_is_left_within_a_few_pings(tmp_path: Path) -> None:
    # A hung server keeps its socket open: only unanswered PINGs tell. (nats-py's default,
    # one PING in 2 minutes, held a node's publishes on it for minutes.)
    with anyio.fail_after(60):
        async with start_nats_server(tmp_path / "store") as server:
            settings = NatsSettings(
                servers=(server.url,), reconnect_wait_s=0.05, ping_interval_s=0.2
            )
            async with NatsConnection(settings) as conn:
                server.process.send_signal(signal.SIGSTOP)
                for _ in range(100):  # the publishes of a node that knows nothing yet
                    await conn.client.publish("hung.x", b"x" * 1000)
                stopped = anyio.current_time()
                await wait_until(lambda: conn.state is ConnectionState.RECONNECTING)
                assert anyio.current_time() - stopped < 0.2 * (3 + 1) + 2
                server.kill()  # (a stopped process takes SIGKILL)


async def test_a_lost_server_is_reconnected_with_one_line_per_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="loom.nats")
    store = tmp_path / "store"
    with anyio.fail_after(60):
        async with start_nats_server(store) as first:
            port = first.port
            settings = NatsSettings(servers=(first.url,), reconnect_wait_s=0.05)
            conn = await NatsConnection(settings).__aenter__()
        try:
            # The server is gone (killed and reaped): the client is reconnecting, for ever.
            await wait_until(lambda: conn.state is ConnectionState.RECONNECTING)
            async with start_nats_server(store, port=port):  # back on the same port
                with anyio.fail_after(20):
                    await conn.wait_connected()
                assert conn.connected
                await conn.jetstream.add_stream(name="BACK", subjects=["back.>"])
                assert (await conn.jetstream.publish("back.again", b"1")).seq == 1
                await conn.aclose()
        finally:
            await conn.aclose()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert said == [
        f"nats: connected to nats://127.0.0.1:{port}",
        f"nats: disconnected from nats://127.0.0.1:{port}; reconnecting",
        f"nats: reconnected to nats://127.0.0.1:{port}",
        "nats: connection closed",
    ]
    assert conn.state is ConnectionState.CLOSED
    assert conn.reconnects == 1


async def test_user_and_password(tmp_path: Path) -> None:
    extra = ["--user", "loom", "--pass", "a-long-password"]
    with anyio.fail_after(30):
        async with start_nats_server(tmp_path / "store", extra=extra) as server:
            good = NatsSettings(servers=(server.url,), user="loom", password="a-long-password")
            async with NatsConnection(good) as conn:
                assert conn.connected
            bad = NatsSettings(servers=(server.url,), user="loom", password="wrong")
            with pytest.raises(NatsConnectFailed, match="authorization violation"):
                async with NatsConnection(bad):
                    pass


async def test_mutual_tls(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    extra = [
        "--tlsverify",
        "--tlscert", str(pki.files["server.crt"]),
        "--tlskey", str(pki.files["server.key"]),
        "--tlscacert", str(pki.files["ca"]),
    ]  # fmt: skip
    with anyio.fail_after(30):
        async with start_nats_server(tmp_path / "store", extra=extra) as server:
            good = NatsSettings(
                servers=(server.url,),
                tls_ca_file=str(pki.files["ca"]),
                tls_cert_file=str(pki.files["client.crt"]),
                tls_key_file=str(pki.files["client.key"]),
            )
            async with NatsConnection(good) as conn:
                await conn.jetstream.add_stream(name="SECURE", subjects=["secure.>"])
                assert (await conn.jetstream.publish("secure.a", b"x")).seq == 1
            # No client certificate: the server refuses the handshake, said in one line.
            no_cert = NatsSettings(
                servers=(server.url,), tls_ca_file=str(pki.files["ca"]), connect_timeout_s=3
            )
            with pytest.raises(NatsConnectFailed) as caught:
                async with NatsConnection(no_cert):
                    pass
            # (Whether the client sees the server's alert or only the closed socket is a race.)
            assert str(caught.value) in (
                f"cannot connect to NATS at {server.url}: the server closed the connection "
                "during the handshake (does it require a client certificate, or TLS?)",
                f"cannot connect to NATS at {server.url}: TLS: the server requires a client "
                "certificate (and its key)",
            )
            missing = NatsSettings(servers=(server.url,), tls_ca_file=str(tmp_path / "none"))
            with pytest.raises(NatsConnectFailed, match="cannot load the TLS files"):
                async with NatsConnection(missing):
                    pass
