"""Services added to a ``grpc.aio`` server as generic handlers only.

The generated ``add_*Servicer_to_server`` functions (and health's and reflection's) register
every method twice: as a generic handler and as a *registered method*. grpc.aio's server keeps
one pending request per registered method and, on every incoming call, waits on all of them
with ``asyncio.wait`` and then re-arms the one that fired: a cost paid per RPC that grows with
the number of methods (fifteen here, about a fifth of a small unary call's server CPU).
Generic handlers alone are looked up per call in a dict per service, for a few microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

__all__ = ["GenericOnly"]


class GenericOnly:
    """Stands in for the server when adding a servicer: keeps the generic handlers, drops the
    registered-method ones (the generic handlers already serve every method)."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        pass
