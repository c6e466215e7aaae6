"""``ctx.collab``: the collaboration primitives bound to one agent and the event it handles.

Every call goes out with the agent as ``sender`` and the event being handled as ``parent``,
so the conversation's thread, trace context and hop budget carry on as they do for
``ctx.emit``. The semantics are those of ``loom.runtime.collab`` (``docs/collab.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._bus import EventBus
from .._event import Event
from ._barrier import BarrierResult, arrive
from ._contract import ContractResult, ProposalOutcome, contract_net, propose
from ._gather import All, GatherMode, GatherResult, gather

__all__ = ["BoundCollab"]

_ALL = All()


class BoundCollab:
    """Collaboration on behalf of one agent; get it as ``ctx.collab``."""

    __slots__ = ("_bus", "_parent", "_sender")

    def __init__(self, bus: EventBus, sender: str, parent: Event | None) -> None:
        self._bus = bus
        self._sender = sender
        self._parent = parent

    async def gather(
        self,
        targets: Sequence[str] | str,
        payload: bytes | Event = b"",
        *,
        timeout: float,
        mode: GatherMode = _ALL,
        reducer: Callable[[Sequence[Event]], Any] | None = None,
        expected: int | None = None,
        type: str = "request",
    ) -> GatherResult[Any]:
        """Fan a request out to ``targets`` and collect replies (``collab.gather``)."""
        return await gather(
            self._bus,
            targets,
            payload,
            timeout=timeout,
            mode=mode,
            reducer=reducer,
            expected=expected,
            sender=self._sender,
            parent=self._parent,
            type=type,
        )

    async def contract_net(
        self,
        topic: str,
        task: bytes | Event = b"",
        *,
        window: float,
        max_awards: int = 1,
        score: Callable[[Event], float] | None = None,
        expected: int | None = None,
    ) -> ContractResult:
        """Call for proposals on ``topic`` and award the best (``collab.contract_net``)."""
        return await contract_net(
            self._bus,
            topic,
            task,
            window=window,
            max_awards=max_awards,
            score=score,
            expected=expected,
            sender=self._sender,
            parent=self._parent,
        )

    async def propose(
        self,
        cfp: Event,
        *,
        score: float,
        timeout: float,
        payload: bytes = b"",
        metadata: Mapping[str, str] | None = None,
    ) -> ProposalOutcome:
        """Bid on a call for proposals and wait for the decision (``collab.propose``)."""
        return await propose(
            self._bus,
            cfp,
            sender=self._sender,
            score=score,
            timeout=timeout,
            payload=payload,
            metadata=metadata,
        )

    async def arrive(
        self, barrier: str, *, parties: int, timeout: float, thread_id: str = ""
    ) -> BarrierResult:
        """Arrive at ``barrier`` as this agent and wait for the other parties
        (``collab.arrive``; needs a ``BarrierCoordinator`` on the bus)."""
        return await arrive(
            self._bus,
            barrier=barrier,
            participant=self._sender,
            parties=parties,
            timeout=timeout,
            thread_id=thread_id,
            parent=self._parent,
            sender=self._sender,
        )
