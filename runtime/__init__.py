"""``loom.runtime``: the event bus, the event model, agents as actors, and their errors.

This is what an application touches. The plumbing that only transports and hosts need (the
``Transport`` seam, remote agents and tools, envelope and topic helpers) is in
:mod:`loom.runtime.lowlevel`; collaboration, cognition, memory, LLMs and tools have their own
subpackages.
"""

from ._agent_card import AgentCard as AgentCard
from ._agent_card import AgentSkill as AgentSkill
from ._agent_card import TurnNotCancellable as TurnNotCancellable
from ._agent_errors import AgentExists as AgentExists
from ._agent_errors import AgentNotFound as AgentNotFound
from ._agent_errors import AgentStartFailed as AgentStartFailed
from ._approval_store import ApprovalStore as ApprovalStore
from ._approvals import ApprovalAlreadyDecided as ApprovalAlreadyDecided
from ._approvals import ApprovalCall as ApprovalCall
from ._approvals import ApprovalChange as ApprovalChange
from ._approvals import ApprovalNotFound as ApprovalNotFound
from ._approvals import ApprovalPolicy as ApprovalPolicy
from ._approvals import ApprovalRecord as ApprovalRecord
from ._approvals import Approvals as Approvals
from ._approvals import ApprovalStats as ApprovalStats
from ._approvals import ApprovalStatus as ApprovalStatus
from ._behaviour import AgentSpec as AgentSpec
from ._behaviour import Behaviour as Behaviour
from ._budget import Budget as Budget
from ._budget import BudgetExhausted as BudgetExhausted
from ._budget import BudgetLedger as BudgetLedger
from ._budget import BudgetSpend as BudgetSpend
from ._budget import BudgetStats as BudgetStats
from ._budget import BudgetUnavailable as BudgetUnavailable
from ._budget import TenantBudget as TenantBudget
from ._bus import EventBus as EventBus
from ._context import Context as Context
from ._dead_letters import RETRY_OF_KEY as RETRY_OF_KEY
from ._dead_letters import drop_dead_letter as drop_dead_letter
from ._dead_letters import find_dead_letter as find_dead_letter
from ._dead_letters import retry_dead_letter as retry_dead_letter
from ._directory import AgentInfo as AgentInfo
from ._directory import AgentStatus as AgentStatus
from ._directory import Directory as Directory
from ._durable import ATTEMPT_KEY as ATTEMPT_KEY
from ._durable import DEFAULT_MAX_DELIVER as DEFAULT_MAX_DELIVER
from ._durable import REDELIVERED_KEY as REDELIVERED_KEY
from ._durable import SEQUENCE_KEY as SEQUENCE_KEY
from ._durable import ConsumerStats as ConsumerStats
from ._durable import DurableMessage as DurableMessage
from ._durable import DurableStats as DurableStats
from ._durable import DurableUnavailable as DurableUnavailable
from ._durable import Position as Position
from ._durable_sub import DLQ_PREFIX as DLQ_PREFIX
from ._durable_sub import DurableSubscription as DurableSubscription
from ._errors import BusClosed as BusClosed
from ._errors import ConfigError as ConfigError
from ._errors import DeadlineExceeded as DeadlineExceeded
from ._errors import DurabilityUnavailable as DurabilityUnavailable
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
from ._public import set_public_module as _set_public_module
from ._qos import QoS as QoS
from ._questions import ASK_USER_TOOL as ASK_USER_TOOL
from ._questions import ApprovalKind as ApprovalKind
from ._questions import NotAQuestion as NotAQuestion
from ._questions import QuestionAlreadyAnswered as QuestionAlreadyAnswered
from ._runtime import DEAD_LETTER_PREFIX as DEAD_LETTER_PREFIX
from ._runtime import LIFECYCLE_PREFIX as LIFECYCLE_PREFIX
from ._runtime import AgentRuntime as AgentRuntime
from ._runtime import LifecycleEvent as LifecycleEvent
from ._stats import AgentStats as AgentStats
from ._stats import BusStats as BusStats
from ._stats import DropReason as DropReason
from ._stats import Drops as Drops
from ._stats import SubscriptionStats as SubscriptionStats
from ._stats import TierStats as TierStats
from ._stats import TopicStats as TopicStats
from ._subscription import DEFAULT_MAX_BUFFER_BYTES as DEFAULT_MAX_BUFFER_BYTES
from ._subscription import Subscription as Subscription
from ._supervision import Strategy as Strategy
from ._supervision import SupervisionPolicy as SupervisionPolicy
from ._timers import Timer as Timer
from ._topics import pattern_matches as pattern_matches
from .collab._errors import BarrierAborted as BarrierAborted
from .collab._errors import BarrierMismatch as BarrierMismatch
from .collab._errors import NoResponders as NoResponders
from .collab._errors import RequestTimeout as RequestTimeout

__all__ = [
    "ASK_USER_TOOL",
    "ATTEMPT_KEY",
    "DEAD_LETTER_PREFIX",
    "DEFAULT_MAX_BUFFER_BYTES",
    "DEFAULT_MAX_DELIVER",
    "DEFAULT_TTL",
    "DLQ_PREFIX",
    "LIFECYCLE_PREFIX",
    "REDELIVERED_KEY",
    "RETRY_OF_KEY",
    "SEQUENCE_KEY",
    "AgentCard",
    "AgentExists",
    "AgentInfo",
    "AgentNotFound",
    "AgentRuntime",
    "AgentSkill",
    "AgentSpec",
    "AgentStartFailed",
    "AgentStats",
    "AgentStatus",
    "ApprovalAlreadyDecided",
    "ApprovalCall",
    "ApprovalChange",
    "ApprovalKind",
    "ApprovalNotFound",
    "ApprovalPolicy",
    "ApprovalRecord",
    "ApprovalStats",
    "ApprovalStatus",
    "ApprovalStore",
    "Approvals",
    "BarrierAborted",
    "BarrierMismatch",
    "Behaviour",
    "Budget",
    "BudgetExhausted",
    "BudgetLedger",
    "BudgetSpend",
    "BudgetStats",
    "BudgetUnavailable",
    "BusClosed",
    "BusStats",
    "ConfigError",
    "ConsumerStats",
    "Context",
    "DeadlineExceeded",
    "Delivery",
    "Directory",
    "DropReason",
    "Drops",
    "DurabilityUnavailable",
    "DurableMessage",
    "DurableStats",
    "DurableSubscription",
    "DurableUnavailable",
    "Envelope",
    "Event",
    "EventBus",
    "InvalidArgument",
    "InvalidTopic",
    "LifecycleEvent",
    "LoomError",
    "NoResponders",
    "NotAQuestion",
    "Position",
    "QoS",
    "QuestionAlreadyAnswered",
    "RequestTimeout",
    "Strategy",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionStats",
    "SupervisionPolicy",
    "TTLExpired",
    "TenantBudget",
    "TierStats",
    "Timer",
    "TopicStats",
    "TurnNotCancellable",
    "WouldBlock",
    "drop_dead_letter",
    "find_dead_letter",
    "pattern_matches",
    "retry_dead_letter",
]

_set_public_module(globals())
