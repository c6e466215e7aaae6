"""The dashboard's actions: retry or drop a stored dead letter (what ``loom dlq retry|drop``
does, through the same runtime functions), and the rule every action follows (approving or
denying a tool call too: ``web/_app.py``).

An action changes the server, so it asks more of a request than reading a page does:

* **who**: a caller the pages let in and, on a server with an admin token, that token's
  holder alone (as ``EventBus.RetryDeadLetter`` on the gRPC port): :meth:`Auth.may_act`;
* **from where**: ``POST`` only, with the ``x-loom-action`` header (a form on another site
  cannot send it, and a script there cannot without a CORS preflight, which this server
  never grants), and an ``Origin``, when the browser sends one, equal to the server's own.
  The session cookie is ``SameSite=Strict`` besides, so another site's request carries none.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from loom.runtime import (
    AgentRuntime,
    BusClosed,
    DurabilityUnavailable,
    InvalidArgument,
    LoomError,
    drop_dead_letter,
    retry_dead_letter,
)

from ._auth import Auth

__all__ = ["ACTION_HEADER", "dead_letter_action", "refusal"]

ACTION_HEADER = "x-loom-action"
"""The header every action request carries (its value is not read)."""

log = logging.getLogger("loom.web")


def refusal(request: Request, auth: Auth) -> Response | None:
    """Why this request may not act (a response), or ``None``: the one rule of every action
    of the dashboard (dead letters, approvals)."""
    if ACTION_HEADER not in request.headers:
        return JSONResponse({"error": f"an action needs the {ACTION_HEADER} header"}, 403)
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.url.netloc}"
        if origin != own:
            return JSONResponse({"error": f"an action from {origin} is not accepted"}, 403)
    if not auth.may_act(request):
        return JSONResponse({"error": "this server's admin token is needed to act"}, 403)
    return None


async def dead_letter_action(request: Request, runtime: AgentRuntime, auth: Auth) -> Response:
    """``POST /api/deadletters/{sequence}/retry`` or ``.../drop``."""
    refused = refusal(request, auth)
    if refused is not None:
        return refused
    sequence: int = request.path_params["sequence"]
    action = request.path_params["action"]
    try:
        if action == "retry":
            topic, event = await retry_dead_letter(runtime.bus, sequence)
            log.info(
                "dead letter %d retried from the dashboard: event %s on %r",
                sequence,
                event.id,
                topic,
            )
            return JSONResponse({"sequence": sequence, "topic": topic, "event_id": event.id})
        if action == "drop":
            await drop_dead_letter(runtime.bus, sequence)
            log.info("dead letter %d dropped from the dashboard", sequence)
            return JSONResponse({"sequence": sequence, "dropped": True})
    except InvalidArgument as exc:
        return JSONResponse({"error": str(exc)}, 404)
    except DurabilityUnavailable as exc:
        return JSONResponse({"error": str(exc)}, 409)
    except (BusClosed, LoomError, OSError) as exc:  # stopping, or the log's server away
        return JSONResponse({"error": str(exc)}, 503)
    return JSONResponse({"error": f"no action {action!r}: retry or drop"}, 404)
