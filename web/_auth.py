"""Who may see the dashboard: the holder of the server's token (or admin token), shown as
``Authorization: Bearer <token>`` or as the session cookie the login page sets.

The cookie never holds the token itself but an HMAC of a fixed label under it, so a cookie
read off a disk does not open the gRPC port. Every comparison is constant-time
(``hmac.compare_digest``) and runs against every accepted value, so the time taken does not
say which one came close.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import HTTPConnection

__all__ = ["COOKIE", "Auth"]

COOKIE = "loom_session"
_LABEL = b"loom dashboard session v1"


class Auth:
    """The tokens that open the dashboard; none means it is open (a loopback-only server
    without a token, as the gRPC port is).

    Args:
        tokens: the accepted tokens (the server's token and admin token).
        locked: refuse everyone even without tokens (a server whose only tokens are tenant
            tokens: those confine a caller to a namespace, which the dashboard cannot).
        admin_tokens: those of ``tokens`` that alone may act (retry or drop a dead letter:
            :meth:`may_act`); none: every caller let in may.
    """

    def __init__(
        self, tokens: tuple[str, ...], *, locked: bool = False, admin_tokens: tuple[str, ...] = ()
    ) -> None:
        self._tokens = tuple(t.encode() for t in tokens)
        self._sessions = tuple(self.session_of(t) for t in tokens)
        self.locked = locked
        self._admin = Auth(admin_tokens) if admin_tokens else None

    @property
    def required(self) -> bool:
        return self.locked or bool(self._tokens)

    @staticmethod
    def session_of(token: str) -> str:
        """The cookie value for ``token``."""
        return hmac.new(token.encode(), _LABEL, hashlib.sha256).hexdigest()

    def check_token(self, token: str) -> bool:
        """Whether ``token`` is one of the accepted tokens (constant time)."""
        given = token.encode()
        ok = False
        for accepted in self._tokens:
            ok |= hmac.compare_digest(given, accepted)
        return ok and not self.locked

    def session_for(self, token: str) -> str | None:
        """The cookie to set for a login with ``token``, or ``None`` when it is wrong."""
        return self.session_of(token) if self.check_token(token) else None

    def allows(self, conn: HTTPConnection) -> bool:
        """Whether the request carries an accepted token (header) or session (cookie)."""
        if not self.required:
            return True
        if self.locked:
            return False
        header = conn.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value:
            return self.check_token(value.strip())
        cookie = conn.cookies.get(COOKIE, "")
        ok = False
        for session in self._sessions:
            ok |= hmac.compare_digest(cookie.encode(), session.encode())
        return ok

    def may_act(self, conn: HTTPConnection) -> bool:
        """Whether the request may change the server: let in and, when there are admin
        tokens, carrying one of them (header or cookie)."""
        if not self.allows(conn):
            return False
        return self._admin is None or self._admin.allows(conn)
