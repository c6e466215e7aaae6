"""``loom.runtime.lowlevel``: the seams and helpers that transports and hosts build on.

Nothing here is needed to write or run agents; the bridge, the SDK's remote mode and the
cluster use it to carry events and tool calls between processes:

* :class:`Transport` and :class:`Inbound`: the bus's seam to another process or node;
* :class:`RemoteAgent`, :class:`RemoteTool`, :class:`ToolProvider`, :func:`tool_inventory`:
  agents and tools that live elsewhere, as the runtime sees them;
* :class:`ContextHost`, :class:`HasAgentSpec`: what a handler's ``Context`` and an agent
  definition are built on; :class:`Hosting` (with :data:`Handler`): the host a runtime
  gives an agent's contexts when some of its operations live elsewhere; :func:`router_for`,
  a bus's reply router, which a host's ``request`` waits in (in process and in a remote
  agent's process alike);
* :func:`lend_in_flight`, :func:`settle_in_flight`, :func:`lose_in_flight`: the counts of
  a subscription whose consumer forwards its events to another process (in flight until
  taken in there);
* :class:`DurableLog` and :class:`DurableConsumer`: the bus's seam to a durable log
  (``loom.cluster.JetStreamLog``), with :func:`mark_delivery`, :func:`dead_letter_event`
  and :func:`dlq_topic`;
* :class:`BudgetAuthority` and :class:`SpendHold`: the seam through which an agent in its
  own process holds and settles its model calls' spend in the server's budget ledger;
* :class:`CallScope` and :class:`CallFrame`, with :func:`current_frame`, :func:`in_frame`,
  :func:`set_frame`, :func:`reset_frame`, :func:`scope_headers` and
  :func:`frame_from_headers`: a turn's call scope (its caps on tool calls and call depth),
  current while its tools run and carried in ``ToolCall.headers`` across processes;
  :class:`ScopeAuthority`, :func:`authority_scope`, :func:`acquire_reservation`,
  :func:`release_reservation`, :func:`slot_free` and :func:`reserved_call`: the one process
  that keeps a scope whose calls span processes, and the reservations every call of the
  tree takes from it before it runs;
* :data:`IDEMPOTENCY_HEADER`, :func:`key_headers` and :func:`key_from_headers`: a tool
  call's idempotency key, carried in its headers to the process or node that serves it;
* :func:`current_tool_output_sink`: where a tool call's partial output goes, read by a
  transport that carries the call to another process (the pieces come back to it), with
  :class:`ToolOutputPieces`, :func:`output_pieces`, :func:`drain_pieces_until` and
  :data:`MAX_TOOL_OUTPUT_PIECES`: the bounded buffer the pieces wait in for their caller;
* envelope, topic and id helpers that keep the wire and the runtime in step;
* :func:`set_public_module`: what every public package of loom calls last, so its names
  show its public path (``loom.bridge.BridgeServer``), not a private module's.
"""

from ._behaviour import HasAgentSpec as HasAgentSpec
from ._behaviour import validate_agent_id as validate_agent_id
from ._budget import BudgetAuthority as BudgetAuthority
from ._budget import SpendHold as SpendHold
from ._context import ContextHost as ContextHost
from ._context import Handler as Handler
from ._context import Hosting as Hosting
from ._durable import DurableConsumer as DurableConsumer
from ._durable import DurableLog as DurableLog
from ._durable import RemoteDurableMessage as RemoteDurableMessage
from ._durable import mark_delivery as mark_delivery
from ._durable import validate_durable_name as validate_durable_name
from ._durable_sub import dead_letter_event as dead_letter_event
from ._durable_sub import dlq_topic as dlq_topic
from ._envelope_build import child_envelope as child_envelope
from ._envelope_build import request_event as request_event
from ._event import EVENT_OVERHEAD_BYTES as EVENT_OVERHEAD_BYTES
from ._event import event_size as event_size
from ._event import mailbox_topic as mailbox_topic
from ._event import reply_envelope as reply_envelope
from ._event import reply_topic as reply_topic
from ._event import step_hop as step_hop
from ._failure import TRACEBACK_LOGGER as TRACEBACK_LOGGER
from ._failure import log_user_failure as log_user_failure
from ._ids import new_id as new_id
from ._ids import now_ms as now_ms
from ._public import set_public_module as set_public_module
from ._remote import RemoteAgent as RemoteAgent
from ._remote import RemoteTool as RemoteTool
from ._runtime import IdClaim as IdClaim
from ._runtime import ToolProvider as ToolProvider
from ._runtime import dead_letter_metadata as dead_letter_metadata
from ._runtime import tool_inventory as tool_inventory
from ._span_records import SpanRecord as SpanRecord
from ._span_records import SpanRecorder as SpanRecorder
from ._span_records import SpanRecorderStats as SpanRecorderStats
from ._span_records import span_recorder as span_recorder
from ._subscription import lend_in_flight as lend_in_flight
from ._subscription import lose_in_flight as lose_in_flight
from ._subscription import settle_in_flight as settle_in_flight
from ._topics import TopicTrie as TopicTrie
from ._topics import validate_pattern as validate_pattern
from ._topics import validate_topic as validate_topic
from ._tracing import SAMPLED_ROOT as SAMPLED_ROOT
from ._tracing import UNSAMPLED_SPAN as UNSAMPLED_SPAN
from ._tracing import UNSAMPLED_TRACEPARENT as UNSAMPLED_TRACEPARENT
from ._tracing import HeadSampling as HeadSampling
from ._tracing import context_from_envelope as context_from_envelope
from ._tracing import envelope_with_context as envelope_with_context
from ._tracing import head_sampling as head_sampling
from ._tracing import is_sampled as is_sampled
from ._transport import Inbound as Inbound
from ._transport import InterestGate as InterestGate
from ._transport import Transport as Transport
from .collab._replies import ReplyRouter as ReplyRouter
from .collab._replies import router_for as router_for
from .resilience._key import IDEMPOTENCY_HEADER as IDEMPOTENCY_HEADER
from .resilience._key import key_from_headers as key_from_headers
from .resilience._key import key_headers as key_headers
from .tools._call_scope import CallFrame as CallFrame
from .tools._call_scope import CallScope as CallScope
from .tools._call_scope import authority_scope as authority_scope
from .tools._call_scope import current_frame as current_frame
from .tools._call_scope import frame_from_headers as frame_from_headers
from .tools._call_scope import in_frame as in_frame
from .tools._call_scope import reserved_call as reserved_call
from .tools._call_scope import reset_frame as reset_frame
from .tools._call_scope import scope_headers as scope_headers
from .tools._call_scope import set_frame as set_frame
from .tools._output import current_tool_output_sink as current_tool_output_sink
from .tools._output_relay import MAX_TOOL_OUTPUT_PIECES as MAX_TOOL_OUTPUT_PIECES
from .tools._output_relay import ToolOutputPieces as ToolOutputPieces
from .tools._output_relay import drain_pieces_until as drain_pieces_until
from .tools._output_relay import output_pieces as output_pieces
from .tools._scope_reserve import ScopeAuthority as ScopeAuthority
from .tools._scope_reserve import acquire_reservation as acquire_reservation
from .tools._scope_reserve import release_reservation as release_reservation
from .tools._scope_reserve import slot_free as slot_free

__all__ = [
    "EVENT_OVERHEAD_BYTES",
    "IDEMPOTENCY_HEADER",
    "MAX_TOOL_OUTPUT_PIECES",
    "SAMPLED_ROOT",
    "TRACEBACK_LOGGER",
    "UNSAMPLED_SPAN",
    "UNSAMPLED_TRACEPARENT",
    "BudgetAuthority",
    "CallFrame",
    "CallScope",
    "ContextHost",
    "DurableConsumer",
    "DurableLog",
    "Handler",
    "HasAgentSpec",
    "HeadSampling",
    "Hosting",
    "IdClaim",
    "Inbound",
    "InterestGate",
    "RemoteAgent",
    "RemoteDurableMessage",
    "RemoteTool",
    "ReplyRouter",
    "ScopeAuthority",
    "SpanRecord",
    "SpanRecorder",
    "SpanRecorderStats",
    "SpendHold",
    "ToolOutputPieces",
    "ToolProvider",
    "TopicTrie",
    "Transport",
    "acquire_reservation",
    "authority_scope",
    "child_envelope",
    "context_from_envelope",
    "current_frame",
    "current_tool_output_sink",
    "dead_letter_event",
    "dead_letter_metadata",
    "dlq_topic",
    "drain_pieces_until",
    "envelope_with_context",
    "event_size",
    "frame_from_headers",
    "head_sampling",
    "in_frame",
    "is_sampled",
    "key_from_headers",
    "key_headers",
    "lend_in_flight",
    "log_user_failure",
    "lose_in_flight",
    "mailbox_topic",
    "mark_delivery",
    "new_id",
    "now_ms",
    "output_pieces",
    "release_reservation",
    "reply_envelope",
    "reply_topic",
    "request_event",
    "reserved_call",
    "reset_frame",
    "router_for",
    "scope_headers",
    "set_frame",
    "set_public_module",
    "settle_in_flight",
    "slot_free",
    "span_recorder",
    "step_hop",
    "tool_inventory",
    "validate_agent_id",
    "validate_durable_name",
    "validate_pattern",
    "validate_topic",
]

set_public_module(globals())
