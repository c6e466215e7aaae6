"""Loom: an event-driven runtime for AI agents.

What users import::

    from loom import Agent, Context, capability

An agent runs in process on an :class:`AgentRuntime`, or connected to a Loom server:
blocking with ``Agent.run()``, or from async code with ``await serve_agent(agent, address)``.
"""

import typing

from loom.runtime import AgentCard as AgentCard
from loom.runtime import AgentRuntime as AgentRuntime
from loom.runtime import AgentSkill as AgentSkill
from loom.runtime import AgentStatus as AgentStatus
from loom.runtime import BusClosed as BusClosed
from loom.runtime import Context as Context
from loom.runtime import DeadlineExceeded as DeadlineExceeded
from loom.runtime import Envelope as Envelope
from loom.runtime import Event as Event
from loom.runtime import EventBus as EventBus
from loom.runtime import InvalidArgument as InvalidArgument
from loom.runtime import InvalidTopic as InvalidTopic
from loom.runtime import LoomError as LoomError
from loom.runtime import QoS as QoS
from loom.runtime import Strategy as Strategy
from loom.runtime import SupervisionPolicy as SupervisionPolicy
from loom.runtime.lowlevel import set_public_module as _set_public_module

from ._agent import Agent as Agent
from ._capability import BoundCapability as BoundCapability
from ._capability import Capability as Capability
from ._capability import InvalidCapability as InvalidCapability
from ._capability import capability as capability
from ._cognitive import CognitiveAgent as CognitiveAgent
from ._connect import serve_agent as serve_agent
from ._telemetry import trace_sampler as trace_sampler
from ._telemetry import tracer_provider as tracer_provider

__version__ = "0.1.0"

if typing.TYPE_CHECKING:
    from ._a2a_errors import A2AAuthFailed as A2AAuthFailed
    from ._a2a_errors import A2ABadCard as A2ABadCard
    from ._a2a_errors import A2AError as A2AError
    from ._a2a_errors import A2ATaskFailed as A2ATaskFailed
    from ._a2a_errors import A2AUnreachable as A2AUnreachable
    from ._a2a_tool import A2AAgentTool as A2AAgentTool
    from ._a2a_tool import A2AToolStats as A2AToolStats

# Remote A2A agents as tools import the a2a-sdk (pydantic, protobuf types, an HTTP client):
# they load on first use, so `import loom` does not pay for them.
_LAZY = {
    "A2AAgentTool": "._a2a_tool",
    "A2AAuthFailed": "._a2a_errors",
    "A2ABadCard": "._a2a_errors",
    "A2AError": "._a2a_errors",
    "A2ATaskFailed": "._a2a_errors",
    "A2AToolStats": "._a2a_tool",
    "A2AUnreachable": "._a2a_errors",
}


def __getattr__(name: str) -> typing.Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        _set_public_module({"__name__": __name__, "__all__": [name], name: value})
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "A2AAgentTool",
    "A2AAuthFailed",
    "A2ABadCard",
    "A2AError",
    "A2ATaskFailed",
    "A2AToolStats",
    "A2AUnreachable",
    "Agent",
    "AgentCard",
    "AgentRuntime",
    "AgentSkill",
    "AgentStatus",
    "BoundCapability",
    "BusClosed",
    "Capability",
    "CognitiveAgent",
    "Context",
    "DeadlineExceeded",
    "Envelope",
    "Event",
    "EventBus",
    "InvalidArgument",
    "InvalidCapability",
    "InvalidTopic",
    "LoomError",
    "QoS",
    "Strategy",
    "SupervisionPolicy",
    "capability",
    "serve_agent",
    "trace_sampler",
    "tracer_provider",
]

_set_public_module(globals())
