"""Who may talk to the server: bearer token, TLS, mutual TLS, loopback by default."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import anyio
import grpc
import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from loom.bridge import BridgeServer, InsecureBind, TLSConfig, is_loopback
from loom.bridge._client import AgentRegistration, BridgeClient, ClientTLS
from loom.bridge._errors import ConnectFailed
from loom.bridge._generated import bridge_pb2, bus_pb2
from loom.runtime import AgentRuntime, Event, EventBus, InvalidArgument

from ._client_support import FAST
from ._server_harness import OldAgent, Served, auth, channel, serving, status_of

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"


async def test_token_good_missing_and_wrong() -> None:
    async with serving(token=TOKEN) as s, channel(s.target) as ch:
        good = OldAgent(ch, "good", metadata=auth(TOKEN))
        await good.connect()
        stats = await good.bus.GetStats(bus_pb2.GetStatsRequest(), metadata=auth(TOKEN))
        assert stats.published >= 0
        # Case-insensitive scheme, as RFC 6750 has it.
        lower = (("authorization", f"bearer {TOKEN}"),)
        await good.bridge.Heartbeat(bridge_pb2.HeartbeatRequest(), metadata=lower)

        for metadata, needle in [
            ((), "missing"),
            (auth("wrong"), "invalid token"),
            ((("authorization", TOKEN),), "invalid token"),  # no scheme
        ]:
            agent = OldAgent(ch, "bad", metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await agent.register()
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert needle in (info.value.details() or "")
            # Streams and server streams are refused the same way.
            call = await agent.open(handshake=False)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call.read()
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert s.server.statistics().registered == 1
        # Health checks need no token (probes have none).
        health = health_pb2_grpc.HealthStub(ch)
        reply = await health.Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    dns: tuple[str, ...] = ("localhost",),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    *(x509.DNSName(name) for name in dns),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


class PKI:
    """A throwaway CA with a server and a client certificate, written as PEM files."""

    def __init__(self, root: Path) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("loom test CA", ca_key, _name("loom test CA"), ca_key, ca=True)
        self._ca, self._ca_key = ca, ca_key
        self.files: dict[str, Path] = {}
        self.pem: dict[str, bytes] = {"ca": ca.public_bytes(serialization.Encoding.PEM)}
        for who in ("server", "client"):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _cert(who, key, ca.subject, ca_key, ca=False)
            self.pem[f"{who}.crt"] = cert.public_bytes(serialization.Encoding.PEM)
            self.pem[f"{who}.key"] = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        for name, data in self.pem.items():
            path = root / (name if "." in name else f"{name}.crt")
            path.write_bytes(data)
            self.files[name] = path

    def server_tls(self, *, mutual: bool, bind: bool = False) -> TLSConfig:
        return TLSConfig(
            cert_file=str(self.files["server.crt"]),
            key_file=str(self.files["server.key"]),
            client_ca_file=str(self.files["ca"]) if mutual else None,
            bind_agent_ids=bind,
        )

    def issue(self, common_name: str, *dns: str) -> tuple[bytes, bytes]:
        """A client certificate (PEM) and its key, naming ``common_name`` and ``dns``."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(common_name, key, self._ca.subject, self._ca_key, ca=False, dns=dns)
        return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def client(self, *, with_cert: bool) -> grpc.ChannelCredentials:
        if not with_cert:
            return grpc.ssl_channel_credentials(root_certificates=self.pem["ca"])
        return grpc.ssl_channel_credentials(
            root_certificates=self.pem["ca"],
            private_key=self.pem["client.key"],
            certificate_chain=self.pem["client.crt"],
        )


async def test_tls(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    async with serving(tls=pki.server_tls(mutual=False)) as s:
        async with channel(s.target, credentials=pki.client(with_cert=False)) as ch:
            await OldAgent(ch, "over-tls").connect()
        # A plaintext client cannot talk to a TLS server.
        async with channel(s.target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await OldAgent(ch, "plain").bridge.Heartbeat(
                    bridge_pb2.HeartbeatRequest(), timeout=2
                )
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    async with serving(tls=pki.server_tls(mutual=True), token=TOKEN) as s:
        async with channel(s.target, credentials=pki.client(with_cert=True)) as ch:
            agent = OldAgent(ch, "mtls", metadata=auth(TOKEN))
            await agent.connect()
            await agent.ping(2)
        async with channel(s.target, credentials=pki.client(with_cert=False)) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await OldAgent(ch, "anon").bridge.Heartbeat(
                    bridge_pb2.HeartbeatRequest(), metadata=auth(TOKEN), timeout=2
                )
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_missing_tls_files_are_a_clear_error(tmp_path: Path) -> None:
    tls = TLSConfig(cert_file=str(tmp_path / "nope.crt"), key_file=str(tmp_path / "nope.key"))
    async with EventBus() as bus, AgentRuntime(bus) as runtime:
        with pytest.raises(InvalidArgument, match=r"nope\.key"):
            async with BridgeServer(runtime, tls=tls):
                pass


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org", ""])
async def test_refuses_a_non_loopback_address_without_token_or_tls(host: str) -> None:
    assert not is_loopback(host)
    async with EventBus() as bus, AgentRuntime(bus) as runtime:
        with pytest.raises(InsecureBind, match="without authentication"):
            BridgeServer(runtime, host=host)
        # Allowed with a token strong enough (not entered: no bind).
        BridgeServer(runtime, host=host, token="kX9-vQ2_mB7zR4tL0pWc8Ye3")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


# ------------------------------------------------------------------ our client over TLS


def _client_tls(pki: PKI, *, with_cert: bool, server_name: str | None = None) -> ClientTLS:
    return ClientTLS(
        root_certificates=pki.pem["ca"],
        certificate_chain=pki.pem["client.crt"] if with_cert else None,
        private_key=pki.pem["client.key"] if with_cert else None,
        server_name=server_name,
    )


async def _round_trip(s: Served, agent: BridgeClient) -> None:
    """An event each way through the server, on the agent's TLS stream."""
    async with s.bus.subscribe("tls.out") as out:
        await agent.publish("tls.out", Event(type="up"), wait_accepted=True)
        with anyio.fail_after(5):
            assert (await out.receive()).event.type == "up"
    await s.bus.publish("tls.in", Event(type="down"))
    with anyio.fail_after(5):
        assert (await agent.receive()).event.type == "down"


async def test_the_client_over_tls_and_mutual_tls(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    registration = AgentRegistration(agent_id="tls-agent", topics=("tls.in",))
    async with serving(tls=pki.server_tls(mutual=False)) as s:
        # server_name: the certificate is checked against it, not against the address's host.
        tls = _client_tls(pki, with_cert=False, server_name="localhost")
        async with BridgeClient(s.server.address, registration, tls=tls, options=FAST) as agent:
            await _round_trip(s, agent)
            assert agent.statistics().features  # section 2 negotiated over TLS too
    async with serving(tls=pki.server_tls(mutual=True), token=TOKEN) as s:
        tls = _client_tls(pki, with_cert=True)
        async with BridgeClient(
            s.server.address, registration, token=TOKEN, tls=tls, options=FAST
        ) as agent:
            await _round_trip(s, agent)


async def test_the_client_fails_clearly_on_a_tls_mismatch(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    (tmp_path / "other").mkdir()
    other = PKI(tmp_path / "other")
    registration = AgentRegistration(agent_id="tls-refused")
    quick = msgspec.structs.replace(FAST, connect_timeout=1.0)
    async with serving(tls=pki.server_tls(mutual=True)) as s:
        cases = {
            "no client certificate": _client_tls(pki, with_cert=False),
            "trusting another CA (and showing its certificate)": _client_tls(other, with_cert=True),
            "plaintext": None,
        }
        for case, tls in cases.items():
            with pytest.raises(ConnectFailed) as info:
                async with BridgeClient(s.server.address, registration, tls=tls, options=quick):
                    pass
            assert s.server.address in str(info.value), case
        assert s.runtime.directory.get("tls-refused") is None  # nobody got in


# ------------------------------------------------------------------ certificates name agents


async def test_a_bound_certificate_acts_only_as_the_agents_it_names(tmp_path: Path) -> None:
    pki = PKI(tmp_path)

    def credentials(cert: tuple[bytes, bytes]) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=pki.pem["ca"], certificate_chain=cert[0], private_key=cert[1]
        )

    as_a = credentials(pki.issue("agent-a"))
    as_b = credentials(pki.issue("someone", "agent-b"))  # a DNS name names an agent too
    async with serving(tls=pki.server_tls(mutual=True, bind=True)) as s:
        async with channel(s.target, credentials=as_a) as ch:
            await OldAgent(ch, "agent-a").connect()  # register and stream as itself
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await OldAgent(ch, "agent-b").register()
            assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
            details = str(info.value.details())
            assert "agent-a" in details
            assert "not agent 'agent-b'" in details
        async with channel(s.target, credentials=as_b) as ch:
            await OldAgent(ch, "agent-b").register()
        # agent-b is registered; a stream claiming it with agent-a's certificate is refused.
        async with channel(s.target, credentials=as_a) as ch:
            intruder = OldAgent(ch, "agent-b")
            call = await intruder.open(handshake=False)
            await intruder.send(bridge_pb2.ClientEvent(ack=bridge_pb2.Ack(message_id="agent-b")))
            code, details = await status_of(call)
            assert code is grpc.StatusCode.PERMISSION_DENIED, details
        assert "agent-b" not in s.server.hub.sessions


async def test_our_client_with_a_bound_certificate(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    cert, key = pki.issue("bound-agent")
    tls = ClientTLS(root_certificates=pki.pem["ca"], certificate_chain=cert, private_key=key)
    quick = msgspec.structs.replace(FAST, connect_timeout=1.0)
    async with serving(tls=pki.server_tls(mutual=True, bind=True)) as s:
        registration = AgentRegistration(agent_id="bound-agent", topics=("tls.in",))
        async with BridgeClient(s.server.address, registration, tls=tls, options=FAST) as agent:
            await _round_trip(s, agent)
        other = AgentRegistration(agent_id="not-named")
        # Refused credentials are final: no retries until connect_timeout.
        with pytest.raises(ConnectFailed, match=r"PERMISSION_DENIED.*not agent 'not-named'"):
            async with BridgeClient(s.server.address, other, tls=tls, options=quick):
                pass


def test_binding_agent_ids_needs_mutual_tls(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="needs mutual TLS"):
        TLSConfig(cert_file="c.pem", key_file="k.pem", bind_agent_ids=True)
