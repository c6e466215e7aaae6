"""Who may talk to the server: a bearer token, TLS (optionally mutual), loopback by default.

The token travels in the ``authorization`` metadata as ``Bearer <token>`` on every call; a
call without it, or with another, ends with ``UNAUTHENTICATED`` before any handler runs. The
health service is exempt, so load balancers and orchestrators can probe without a secret.
The admin token, if the server has one, is accepted wherever the token is and makes its
caller the operator (:func:`principal_of`); so is each tenant token, which confines its caller
to a namespace (``bridge/_tenants.py``). Who a caller is once admitted, and what that lets
it do, is ``bridge/_identity.py``.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Never

import grpc
import grpc.aio
import msgspec

from loom.runtime import InvalidArgument

from ._errors import InsecureBind, WeakToken
from ._identity import ANONYMOUS, OPERATOR, Principal
from ._tenants import Tenants

__all__ = [
    "MIN_TOKEN_BITS",
    "MIN_TOKEN_LENGTH",
    "TLSConfig",
    "TokenInterceptor",
    "certificate_names",
    "check_bind",
    "is_loopback",
    "principal_of",
    "token_weakness",
]

_HEALTH_PREFIX = "/grpc.health.v1.Health/"

MIN_TOKEN_LENGTH = 16
"""The fewest characters a token may have on a non-loopback address."""
MIN_TOKEN_BITS = 40
"""The least entropy a token may have there, estimated from its characters' frequencies."""


class TLSConfig(msgspec.Struct, frozen=True, kw_only=True):
    """TLS for the server: its certificate chain and key (PEM files), and for mutual TLS the CA
    that client certificates must chain to (clients without one are refused).

    Attributes:
        cert_file: the server's certificate chain.
        key_file: its private key.
        client_ca_file: CA bundle for client certificates; ``None`` for server-only TLS.
        bind_agent_ids: (mutual TLS) a client may register, and open its stream, only as an
            agent its certificate names: the subject's common name or a DNS name among its
            subject alternative names. Else ``PERMISSION_DENIED``. Without it any client with
            a certificate of the CA may act as any agent (the token, if any, still applies).

    Raises:
        InvalidArgument: ``bind_agent_ids`` without ``client_ca_file``.
    """

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    bind_agent_ids: bool = False

    def __post_init__(self) -> None:
        if self.bind_agent_ids and self.client_ca_file is None:
            raise InvalidArgument(
                "bind_agent_ids needs mutual TLS: without client_ca_file no client shows a "
                "certificate to bind"
            )

    def credentials(self) -> grpc.ServerCredentials:
        """The gRPC server credentials.

        Raises:
            InvalidArgument: a file is missing or unreadable (named in the message).
        """
        key = _read(self.key_file, "TLS key")
        cert = _read(self.cert_file, "TLS certificate")
        ca = None if self.client_ca_file is None else _read(self.client_ca_file, "client CA")
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )


def certificate_names(context: grpc.aio.ServicerContext[Any, Any]) -> frozenset[str]:
    """The names the peer's (verified) client certificate gives: its subject's common name
    and its DNS subject alternative names. Empty without a client certificate."""
    auth = context.auth_context()
    raw = [*auth.get("x509_common_name", ()), *auth.get("x509_subject_alternative_name", ())]
    return frozenset(name.decode("utf-8", "replace") for name in raw)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the {what} file {path!r}: {exc.strerror}") from exc


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or a wildcard ("", "0.0.0.0" parse; names do not)


def token_weakness(token: str) -> str | None:
    """Why ``token`` is too weak to guard a server others can reach, or ``None``.

    Too weak: whitespace or control characters in it, fewer than :data:`MIN_TOKEN_LENGTH`
    characters, or less than :data:`MIN_TOKEN_BITS` bits of entropy as its characters'
    frequencies estimate it (which catches repeats such as one character many times, not a
    dictionary word: use a generated token).
    """
    if any(c.isspace() or not c.isprintable() for c in token):
        return "it contains whitespace or control characters"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"it has {len(token)} characters, fewer than {MIN_TOKEN_LENGTH}"
    n = len(token)
    bits = -sum(k * math.log2(k / n) for k in Counter(token).values())
    if bits < MIN_TOKEN_BITS:
        return (
            f"its characters repeat too much (about {bits:.0f} bits of entropy, fewer than "
            f"{MIN_TOKEN_BITS})"
        )
    return None


def check_bind(
    host: str,
    *,
    token: str | None,
    tls: TLSConfig | None,
    admin_token: str | None = None,
    tenants: Tenants | None = None,
) -> None:
    """Refuse to serve a non-loopback address without a token or TLS, or with a weak token.

    Raises:
        InsecureBind: it would serve without either.
        WeakToken: ``token``, ``admin_token`` or a tenant token is too weak
            (:func:`token_weakness`).
    """
    if is_loopback(host):
        return
    if not token and not tenants and tls is None:
        raise InsecureBind(host)
    named = [(f"tenant token {t.name!r}", t.token) for t in (tenants.tenants if tenants else ())]
    for what, value in (("token", token), ("admin token", admin_token), *named):
        if value is not None:
            why = token_weakness(value)
            if why is not None:
                raise WeakToken(host, what, why)


def _bearer(context: grpc.aio.ServicerContext[Any, Any]) -> bytes | None:
    """The ``authorization`` metadata of the call, scheme normalised, or ``None``."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            raw = value.encode() if isinstance(value, str) else value
            return b"Bearer " + raw[7:] if raw[:7].lower() == b"bearer " else raw
    return None


def principal_of(
    context: grpc.aio.ServicerContext[Any, Any],
    *,
    admin_token: str | None,
    bind_agent_ids: bool,
    tenants: Tenants | None = None,
) -> Principal:
    """Who made a unary call (or an ``EventBus.Subscribe``), as the credentials say.

    The admin token makes the operator. A tenant token confines the caller to its
    namespace. Under ``bind_agent_ids`` (mutual TLS) a client certificate makes the agents it
    names, the common name first (the sender of what it publishes without one). Anything
    else, the shared token included, is a caller that is no agent: the token is shared by
    every client, so it cannot tell them apart.
    """
    given = _bearer(context) if admin_token is not None or tenants else None
    if (
        admin_token is not None
        and given is not None
        and hmac.compare_digest(given, f"Bearer {admin_token}".encode())
    ):
        return OPERATOR
    namespace = tenants.namespace_of(given) if tenants and given is not None else None
    if bind_agent_ids:
        auth = context.auth_context()
        common = [n.decode("utf-8", "replace") for n in auth.get("x509_common_name", ())]
        names = certificate_names(context)
        if names:
            return Principal(name=common[0] if common else "", agents=names, namespace=namespace)
    return ANONYMOUS if namespace is None else Principal(namespace=namespace)


def _denying(
    handler: grpc.RpcMethodHandler[Any, Any], details: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind as ``handler`` that ends the call with UNAUTHENTICATED."""

    async def deny(_request: object, context: grpc.aio.ServicerContext[Any, Any]) -> Never:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, details)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Admits a call only with ``authorization: Bearer <token>``, the admin token or a tenant
    token, if given (health checks exempt). With tenant tokens the shared token may be
    ``None``: then only those and the admin token are admitted."""

    def __init__(
        self, token: str | None, admin_token: str | None = None, tenants: Tenants | None = None
    ) -> None:
        if token is not None and not token:
            raise InvalidArgument("the token must not be empty")
        if token is None and not tenants:
            raise InvalidArgument("a token or a tenant token is needed")
        self._expected = None if token is None else f"Bearer {token}".encode()
        self._admin = None if admin_token is None else f"Bearer {admin_token}".encode()
        self._tenants = tenants if tenants else None

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_HEALTH_PREFIX):
            return handler
        given: str | bytes | None = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value
                break
        if given is None:
            return _denying(handler, "missing authorization metadata: 'Bearer <token>'")
        raw = given.encode() if isinstance(given, str) else given
        # "bearer" is case-insensitive (RFC 6750); the token itself is compared in constant time.
        if raw[:7].lower() == b"bearer ":
            raw = b"Bearer " + raw[7:]
        # All compared, always: how long the check takes says nothing of which one matched.
        ok = self._expected is not None and hmac.compare_digest(raw, self._expected)
        admin = self._admin is not None and hmac.compare_digest(raw, self._admin)
        tenant = self._tenants is not None and self._tenants.namespace_of(raw) is not None
        if not (ok or admin or tenant):
            return _denying(handler, "invalid token")
        return handler
