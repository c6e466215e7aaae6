"""``loom.web``: the HTTP side of ``loom serve``: ``/healthz``, ``/readyz``, ``/metrics`` and
a live dashboard (agents, topology, topics, a live tail, a turn's timeline, dead letters),
the A2A server of the agents it exposes (``/a2a/{id}/``, ``docs/interop.md``),
an ASGI application (starlette) served by uvicorn in the server's task group.

It reads the runtime in process (``loom.runtime``) and never imports the bridge, the
cluster or the SDK; ``loom serve`` (``sdk/cli/_serve.py``) composes it (``docs/serve.md``,
``docs/observability.md``).
"""

from loom.runtime.lowlevel import set_public_module as _set_public_module

from ._a2a import A2AServer as A2AServer
from ._a2a_agent import A2AAgent as A2AAgent
from ._a2a_agent import CancelTurn as CancelTurn
from ._app import Metrics as Metrics
from ._app import Readiness as Readiness
from ._app import create_app as create_app
from ._auth import Auth as Auth
from ._errors import HttpBindError as HttpBindError
from ._errors import WebError as WebError
from ._observer import Observer as Observer
from ._server import HttpServer as HttpServer

__all__ = [
    "A2AAgent",
    "A2AServer",
    "Auth",
    "CancelTurn",
    "HttpBindError",
    "HttpServer",
    "Metrics",
    "Observer",
    "Readiness",
    "WebError",
    "create_app",
]

_set_public_module(globals())
