"""``Directory``: the runtime's directory of agents over the wire, and its conversions.

The wire form is built from :class:`~loom.runtime.AgentInfo` snapshots (taken when the call
is served, so a listing is consistent per agent, not across agents), and read back into the
same struct by :func:`agent_info_from_proto` on the client side.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import grpc
import grpc.aio

from loom.bridge._generated import directory_pb2, directory_pb2_grpc
from loom.runtime import AgentInfo, AgentStatus, InvalidArgument

from ._errors import WireError, WrongAgent
from ._status import status_of
from ._tenants import agent_inside

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["DirectoryService", "agent_info_from_proto", "agent_info_to_proto"]

log = logging.getLogger("loom.bridge")

_Context = grpc.aio.ServicerContext[Any, Any]

_TO_PROTO: Final[dict[AgentStatus, directory_pb2.AgentStatus]] = {
    AgentStatus.CREATED: directory_pb2.AGENT_STATUS_CREATED,
    AgentStatus.STARTING: directory_pb2.AGENT_STATUS_STARTING,
    AgentStatus.RUNNING: directory_pb2.AGENT_STATUS_RUNNING,
    AgentStatus.STOPPING: directory_pb2.AGENT_STATUS_STOPPING,
    AgentStatus.STOPPED: directory_pb2.AGENT_STATUS_STOPPED,
    AgentStatus.FAILED: directory_pb2.AGENT_STATUS_FAILED,
    AgentStatus.STALE: directory_pb2.AGENT_STATUS_STALE,
    AgentStatus.DISCONNECTED: directory_pb2.AGENT_STATUS_DISCONNECTED,
}
_FROM_PROTO: Final[dict[int, AgentStatus]] = {int(v): k for k, v in _TO_PROTO.items()}


def agent_info_to_proto(info: AgentInfo) -> directory_pb2.AgentInfo:
    """The wire form of a directory snapshot."""
    return directory_pb2.AgentInfo(
        id=info.id,
        status=_TO_PROTO[info.status],
        remote=info.remote,
        patterns=info.patterns,
        capabilities=info.capabilities,
        last_heartbeat_ms=info.last_heartbeat_ms,
        mailbox_depth=max(info.mailbox_depth, 0),
        in_flight=max(info.in_flight, 0),
        restarts=info.restarts,
        metadata=info.metadata,
        node=info.node,
    )


def agent_info_from_proto(msg: directory_pb2.AgentInfo) -> AgentInfo:
    """A directory snapshot read off the wire.

    Raises:
        WireError: the status is unspecified or unknown (a newer server's value).
    """
    status = _FROM_PROTO.get(msg.status)
    if status is None:
        raise WireError(f"AgentInfo {msg.id!r}", f"unknown AgentStatus {msg.status}")
    return AgentInfo(
        id=msg.id,
        status=status,
        patterns=tuple(msg.patterns),
        capabilities=tuple(msg.capabilities),
        remote=msg.remote,
        last_heartbeat_ms=msg.last_heartbeat_ms,
        mailbox_depth=msg.mailbox_depth,
        in_flight=msg.in_flight,
        restarts=msg.restarts,
        metadata=dict(msg.metadata),
        node=msg.node,
    )


class DirectoryService(directory_pb2_grpc.DirectoryServicer):
    """``loom.v1.Directory``: the agents the server's runtime knows, local and remote."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def ListAgents(
        self, request: directory_pb2.ListAgentsRequest, context: _Context
    ) -> directory_pb2.ListAgentsResponse:
        directory = self.hub.runtime.directory
        try:
            # By topic, the bus's own routing answers: exactly the agents a publish reaches.
            agents = directory.by_topic(request.topic) if request.topic else directory.all()
        except InvalidArgument as exc:
            await context.abort(status_of(exc), f"ListAgentsRequest.topic: {exc}")
        if request.capability:
            agents = [a for a in agents if request.capability in a.capabilities]
        namespace = self.hub.caller(context).namespace
        if namespace is not None:  # a tenant lists the agents of its namespace only
            agents = [a for a in agents if agent_inside(namespace, a.id)]
        return directory_pb2.ListAgentsResponse(agents=[agent_info_to_proto(a) for a in agents])

    async def ReleaseAgent(
        self, request: directory_pb2.ReleaseAgentRequest, context: _Context
    ) -> directory_pb2.ReleaseAgentResponse:
        hub = self.hub
        if not hub.caller(context).operator:
            error = WrongAgent(
                "releasing an agent id needs the server's admin token"
                + ("" if hub.admin_token else " (this server has none: start it with one)")
            )
            await context.abort(status_of(error), str(error))
        released, was_connected = await hub.release(request.agent_id)
        log.info(
            "agent %s %s by the operator%s",
            request.agent_id,
            "released" if released else "not registered: nothing released",
            " (its open stream ended)" if was_connected else "",
        )
        return directory_pb2.ReleaseAgentResponse(released=released, was_connected=was_connected)
