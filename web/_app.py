"""The ASGI application of the HTTP port: health, readiness, metrics, the dashboard's pages
and the JSON (and Server-Sent Events) endpoints that feed them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from loom.runtime import (
    AgentRuntime,
    BusClosed,
    InvalidTopic,
    QoS,
    Subscription,
    SubscriptionClosed,
)

from . import _views as views
from ._a2a import A2AServer
from ._actions import dead_letter_action, refusal
from ._auth import COOKIE, Auth
from ._observer import Observer, event_json

__all__ = ["Metrics", "Readiness", "create_app"]

Metrics = Callable[[], tuple[bytes, str]]
"""``metrics()``: the body of ``/metrics`` and its content type (Prometheus' text format)."""

_METRICS_OFF = (
    "metrics are off on this server ([serve] metrics = false in loom.toml, --no-metrics "
    "or LOOM_METRICS=false)\n"
)

Readiness = Callable[[], str | None]
"""``ready()``: ``None`` when the server takes work, else why not (``/readyz`` says it)."""

_STATIC = resources.files(__package__) / "static"
_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
_SECURITY = {
    # The pages load only their own files and talk only to their own origin.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_encoder = msgspec.json.Encoder()


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


class Viewers:
    """The live tails open now: each a bounded Realtime subscription of its own, closed when
    its browser goes away or the server stops (so a slow browser drops its own copies and
    never holds a publisher back)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: set[Subscription] = set()

    def close_all(self) -> None:
        for sub in list(self.open):
            sub.close()


def _static(name: str) -> bytes:
    return (_STATIC / name).read_bytes()


def create_app(
    runtime: AgentRuntime,
    *,
    observer: Observer,
    auth: Auth,
    metrics: Metrics | None = None,
    ready: Readiness | None = None,
    secure_cookie: bool = False,
    viewers: Viewers | None = None,
    tail_buffer: int = 256,
    a2a: A2AServer | None = None,
) -> Starlette:
    """The HTTP port's application.

    Args:
        runtime: what the pages show.
        observer: the dashboard's memory of the bus (rates, turns, dead letters).
        auth: who may see the pages and APIs (``/healthz`` and ``/readyz`` are open: they
            say only "ok" or why not).
        metrics: the body of ``/metrics``; ``None``: 404.
        ready: the readiness of ``/readyz``; ``None``: ready while the app serves.
        secure_cookie: mark the session cookie ``Secure`` (the port speaks TLS).
        viewers: where the live tails are tracked (the server closes them on stop).
        tail_buffer: each live tail's buffer (Realtime: beyond it, its copies drop).
        a2a: the agents exposed over A2A (``/a2a/...``, ``docs/interop.md``).
    """
    tails = viewers if viewers is not None else Viewers(64)

    def guarded(
        handler: Callable[[Request], Awaitable[Response]], *, page: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not auth.allows(request):
                if page:
                    return _login(401)
                return _Json({"error": "unauthenticated: log in or send the token"}, 401)
            observer.wake()  # someone looks: the dashboard starts remembering
            response = await handler(request)
            response.headers.update(_SECURITY)
            return response

        return endpoint

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        why = ready() if ready is not None else None
        if why is None:
            return PlainTextResponse("ready\n")
        return PlainTextResponse(f"not ready: {why}\n", 503)

    async def metrics_endpoint(request: Request) -> Response:
        if metrics is None:
            # One line a Prometheus operator can act on: its scrape shows the target down.
            return PlainTextResponse(_METRICS_OFF, 404)
        body, content_type = metrics()
        return Response(body, media_type=content_type)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return _login(200) if auth.required else RedirectResponse("/", 303)
        form = await request.form()
        token = form.get("token")
        session = auth.session_for(token) if isinstance(token, str) else None
        if session is None:
            return _login(401, "That token is not accepted.")
        response = RedirectResponse("/", 303)
        response.set_cookie(
            COOKIE, session, httponly=True, samesite="strict", secure=secure_cookie, path="/"
        )
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def index(request: Request) -> Response:
        return HTMLResponse(_static("index.html"))

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in _TYPES:
            return PlainTextResponse("not found\n", 404)
        try:
            return Response(_static(name), media_type=_TYPES[suffix])
        except FileNotFoundError:
            return PlainTextResponse("not found\n", 404)

    async def api_agents(request: Request) -> Response:
        return _Json(views.agents(runtime))

    async def api_agent(request: Request) -> Response:
        observer.want_tap()  # its recent events come from the tap
        detail = views.agent_detail(runtime, observer, request.path_params["agent_id"])
        if detail is None:
            return _Json({"error": "no such agent"}, 404)
        return _Json(detail)

    async def api_topics(request: Request) -> Response:
        return _Json(views.topics(runtime, observer))

    async def api_topology(request: Request) -> Response:
        return _Json(views.topology(runtime, observer))

    async def api_turns(request: Request) -> Response:
        return _Json(views.turns(observer))

    async def api_turn(request: Request) -> Response:
        found = views.timeline(observer, request.path_params["key"])
        if found is None:
            return _Json({"error": "no such turn (or forgotten)"}, 404)
        return _Json(found)

    async def api_policies(request: Request) -> Response:
        return _Json(views.policies(runtime))

    async def api_dead_letters(request: Request) -> Response:
        return _Json(await views.durable(runtime, observer))

    async def api_approvals(request: Request) -> Response:
        return _Json(await views.approvals(runtime, request.query_params.get("status", "")))

    async def api_decide(request: Request) -> Response:
        # A decision is an action: the same rule as a dead letter's retry (the action header,
        # the server's own origin, the admin token where there is one), as `loom approve` needs
        # the admin token on the gRPC port.
        refused = refusal(request, auth)
        if refused is not None:
            return refused
        try:
            note = msgspec.json.decode(await request.body() or b"{}").get("note", "")
        except (msgspec.DecodeError, AttributeError):
            return _Json({"error": 'the body is a JSON object: {"note": "..."}'}, 400)
        status, body = await views.decide(
            runtime, request.path_params["approval_id"], request.path_params["verdict"], str(note)
        )
        return _Json(body, status)

    async def api_budgets(request: Request) -> Response:
        return _Json(views.budgets(runtime))

    async def api_dead_letter_action(request: Request) -> Response:
        return await dead_letter_action(request, runtime, auth)

    async def api_tail(request: Request) -> Response:
        pattern = request.query_params.get("pattern") or ">"
        if len(tails.open) >= tails.limit:
            return _Json({"error": f"{tails.limit} live tails are open: close one"}, 503)
        try:
            sub = runtime.bus.subscribe(pattern, qos=QoS.REALTIME, buffer_size=tail_buffer)
        except InvalidTopic as exc:
            return _Json({"error": str(exc)}, 400)
        except BusClosed:
            return _Json({"error": "the server is stopping"}, 503)
        observer.own(sub)
        tails.open.add(sub)
        return StreamingResponse(
            _tail(sub, observer, tails),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", guarded(metrics_endpoint)),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST", "GET"]),
        Route("/", guarded(index, page=True)),
        Route("/static/{name}", guarded(static)),
        Route("/api/agents", guarded(api_agents)),
        Route("/api/agents/{agent_id}", guarded(api_agent)),
        Route("/api/topics", guarded(api_topics)),
        Route("/api/topology", guarded(api_topology)),
        Route("/api/turns", guarded(api_turns)),
        Route("/api/turns/{key:path}", guarded(api_turn)),
        Route("/api/deadletters", guarded(api_dead_letters)),
        Route("/api/policies", guarded(api_policies)),
        Route(
            "/api/deadletters/{sequence:int}/{action}",
            guarded(api_dead_letter_action),
            methods=["POST"],
        ),
        Route("/api/tail", guarded(api_tail)),
        *(a2a.routes(auth) if a2a is not None else ()),
        Route("/api/approvals", guarded(api_approvals)),
        Route("/api/approvals/{approval_id}/{verdict}", guarded(api_decide), methods=["POST"]),
        Route("/api/budgets", guarded(api_budgets)),
    ]
    return Starlette(routes=routes)


async def _tail(sub: Subscription, observer: Observer, tails: Viewers) -> AsyncIterator[bytes]:
    """The events of ``sub`` as Server-Sent Events; every 10 s of quiet a ``stats`` event
    (what this tail dropped), which also finds a browser that went away."""
    try:
        yield b"event: hello\ndata: {}\n\n"
        reported = 0
        while True:
            delivery = None
            with anyio.move_on_after(10):
                try:
                    delivery = await sub.receive()
                except SubscriptionClosed:  # the server stops (a browser leaving cancels)
                    return
            if delivery is not None:
                yield b"data: " + _encoder.encode(event_json(delivery)) + b"\n\n"
            dropped = sub.statistics().dropped.total
            if delivery is None or dropped != reported:
                reported = dropped
                yield b"event: stats\ndata: " + _encoder.encode({"dropped": dropped}) + b"\n\n"
    finally:
        tails.open.discard(sub)
        observer.disown(sub)
        sub.close()


def _login(status: int, message: str = "") -> HTMLResponse:
    page = _static("login.html").decode()
    page = page.replace("<!--message-->", _escape(message))
    headers = {
        **_SECURITY,
        # The login page is one self-contained file: its style inline, no script at all.
        "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'",
    }
    return HTMLResponse(page, status, headers=headers)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
