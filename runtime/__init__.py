"""``loom.runtime``: the event bus, the event model and (in later layers) the actor runtime."""

from ._behaviour import AgentSpec as AgentSpec
from ._behaviour import Behaviour as Behaviour
from ._behaviour import HasAgentSpec as HasAgentSpec
from ._behaviour import validate_agent_id as validate_agent_id
from ._bus import EventBus as EventBus
from ._context import Context as Context
from ._context import ContextHost as ContextHost
from ._directory import AgentInfo as AgentInfo
from ._directory import AgentStatus as AgentStatus
from ._directory import Directory as Directory
from ._envelope_build import child_envelope as child_envelope
from ._envelope_build import request_event as request_event
from ._errors import BusClosed as BusClosed
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import InvalidArgument as InvalidArgument
from ._errors import InvalidTopic as InvalidTopic
from ._errors import LoomError as LoomError
from ._errors import SubscriptionClosed as SubscriptionClosed
from ._errors import TTLExpired as TTLExpired
from ._errors import WouldBlock as WouldBlock
from ._event import DEFAULT_TTL as DEFAULT_TTL
from ._event import Delivery as Delivery
from ._event import Envelope as Envelope
from ._event import Event as Event
from ._event import mailbox_topic as mailbox_topic
from ._event import reply_envelope as reply_envelope
from ._event import reply_topic as reply_topic
from ._event import step_hop as step_hop
from ._ids import new_id as new_id
from ._ids import now_ms as now_ms
from ._qos import QoS as QoS
from ._remote import AgentExists as AgentExists
from ._remote import RemoteAgent as RemoteAgent
from ._remote import RemoteTool as RemoteTool
from ._remote import ToolProvider as ToolProvider
from ._remote import tool_inventory as tool_inventory
from ._runtime import DEAD_LETTER_PREFIX as DEAD_LETTER_PREFIX
from ._runtime import LIFECYCLE_PREFIX as LIFECYCLE_PREFIX
from ._runtime import AgentNotFound as AgentNotFound
from ._runtime import AgentRuntime as AgentRuntime
from ._runtime import AgentStartFailed as AgentStartFailed
from ._runtime import LifecycleEvent as LifecycleEvent
from ._stats import BusStats as BusStats
from ._stats import DropReason as DropReason
from ._stats import Drops as Drops
from ._stats import SubscriptionStats as SubscriptionStats
from ._stats import TopicStats as TopicStats
from ._subscription import Subscription as Subscription
from ._supervision import Strategy as Strategy
from ._supervision import SupervisionPolicy as SupervisionPolicy
from ._timers import Timer as Timer
from ._topics import pattern_matches as pattern_matches
from ._topics import validate_pattern as validate_pattern
from ._topics import validate_topic as validate_topic
from ._tracing import context_from_envelope as context_from_envelope
from ._tracing import envelope_with_context as envelope_with_context
from ._transport import Inbound as Inbound
from ._transport import Transport as Transport
from .collab._errors import BarrierAborted as BarrierAborted
from .collab._errors import BarrierMismatch as BarrierMismatch
from .collab._errors import NoResponders as NoResponders
from .collab._errors import RequestTimeout as RequestTimeout

__all__ = [
    "DEAD_LETTER_PREFIX",
    "DEFAULT_TTL",
    "LIFECYCLE_PREFIX",
    "AgentExists",
    "AgentInfo",
    "AgentNotFound",
    "AgentRuntime",
    "AgentSpec",
    "AgentStartFailed",
    "AgentStatus",
    "BarrierAborted",
    "BarrierMismatch",
    "Behaviour",
    "BusClosed",
    "BusStats",
    "Context",
    "ContextHost",
    "DeadlineExceeded",
    "Delivery",
    "Directory",
    "DropReason",
    "Drops",
    "Envelope",
    "Event",
    "EventBus",
    "HasAgentSpec",
    "Inbound",
    "InvalidArgument",
    "InvalidTopic",
    "LifecycleEvent",
    "LoomError",
    "NoResponders",
    "QoS",
    "RemoteAgent",
    "RemoteTool",
    "RequestTimeout",
    "Strategy",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionStats",
    "SupervisionPolicy",
    "TTLExpired",
    "Timer",
    "ToolProvider",
    "TopicStats",
    "Transport",
    "WouldBlock",
    "child_envelope",
    "context_from_envelope",
    "envelope_with_context",
    "mailbox_topic",
    "new_id",
    "now_ms",
    "pattern_matches",
    "reply_envelope",
    "reply_topic",
    "request_event",
    "step_hop",
    "tool_inventory",
    "validate_agent_id",
    "validate_pattern",
    "validate_topic",
]
