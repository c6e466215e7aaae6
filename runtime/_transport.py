"""The seam between the bus and a cross-process backend.

An :class:`EventBus` always routes to its own subscriptions itself: QoS buffers, ordering and
statistics live in the bus. A :class:`Transport` only *carries* events between buses in
different processes. ``docs/bus.md`` says how the QoS tiers map onto NATS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from anyio.abc import TaskStatus

from ._event import Event
from ._qos import QoS

__all__ = ["Inbound", "InterestGate", "Transport"]


class Inbound(Protocol):
    """Where a transport hands the events that arrived from other processes."""

    async def deliver_inbound(self, topic: str, event: Event) -> int | None:
        """Route ``event`` to the local subscriptions only, with their QoS.

        Waits while a lossless local subscriber is full: a transport that awaits this gets
        backpressure to pass upstream (a NATS JetStream consumer simply does not ack yet).

        Returns:
            How many local subscriptions took it (the bus counts; 0: none here wanted it, so
            the transport may hand it back rather than lose it), or ``None`` from an inbound
            that does not count.
        """
        ...

    # An inbound may also offer ``deliver_inbound_nowait(topic, event) -> int`` (the bus
    # does): the same delivery when it needs no wait, else ``WouldBlock`` having delivered
    # nothing. A transport taking many events at a time tries it first and awaits
    # ``deliver_inbound`` only for the events it refuses: no coroutine per event.


class Transport(Protocol):
    """Carries events between :class:`EventBus` instances in different processes.

    Contract:

    * ``run`` connects, calls ``task_status.started()`` once it can carry events, then hands
      every event that arrives for a pattern of local interest to ``inbound`` until cancelled.
      The bus runs it in its own task group, so it never outlives the bus.
    * ``publish`` carries one event out. It returns when the backend has accepted it to the
      degree the tier needs (a JetStream publish waits for its ack); it may wait, which is
      backpressure on the publisher. It must not echo the event back to this bus's
      ``inbound``: the bus has delivered it locally already (NATS: ``no_echo``).
    * ``publish_nowait`` carries one event out if that needs no wait at all (a connection,
      credit and room in its queue now), else raises :class:`WouldBlock` having sent nothing.
      :meth:`EventBus.publish_nowait` calls it before routing locally, so a refusal leaves
      the publish undone everywhere (all or nothing). A transport that can never send
      without waiting simply always raises.
    * ``add_interest`` / ``remove_interest`` tell the transport which patterns local
      subscriptions hold. They are called once per pattern and tier as it comes and goes,
      never block, and the transport applies them in order in its own task.
    """

    async def run(self, inbound: Inbound, *, task_status: TaskStatus[None]) -> None: ...

    async def publish(self, topic: str, event: Event) -> None: ...

    def publish_nowait(self, topic: str, event: Event) -> None: ...

    def add_interest(self, pattern: str, qos: QoS) -> None: ...

    def remove_interest(self, pattern: str, qos: QoS) -> None: ...


@runtime_checkable
class InterestGate(Protocol):
    """What a transport that sends only where other processes hold interest may also offer,
    so that a publish nobody elsewhere wants does not even call it (``loom.cluster``'s
    transport does; the bridge's client transport, which the server routes for, does not).

    The bus asks ``wants`` once per topic when it computes the topic's route and keeps the
    answer with the route; ``on_interest_change`` makes it recompute them all. With no
    interest elsewhere a publish pays nothing for the transport (one flag it tests anyway).
    """

    def wants(self, topic: str) -> bool:
        """Whether ``publish(topic, ...)`` would carry the event anywhere now."""
        ...

    def on_interest_change(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` whenever ``wants`` may answer differently for some topic, at
        once and in the event loop's thread, before the transport acts on the change (it
        must not block: the bus only marks its cached answers stale). Called once, by the
        bus that the transport is given to, before the transport runs."""
        ...
