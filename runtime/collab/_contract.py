"""Contract-net: call for proposals, collect scored bids for a window, award the best.

The manager publishes a call for proposals (CFP) as a request; bidders answer it with a
``contract.propose`` (or ``contract.decline``) reply; when the window closes the manager
answers every proposal with ``contract.award`` or ``contract.reject``, each a reply to the
proposal (``reply_topic`` / ``reply_envelope``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from typing import Final

import anyio
import msgspec

from .._bus import EventBus
from .._errors import BusClosed, InvalidArgument, SubscriptionClosed
from .._event import Event, reply_envelope, reply_topic
from .._ids import new_id
from .._qos import QoS
from ._base import (
    INBOX_SLACK,
    check_sender,
    check_timeout,
    inbox_topic,
    outgoing,
    publish_routed,
)

__all__ = [
    "AWARD",
    "CFP",
    "DECLINE",
    "PROPOSE",
    "REJECT",
    "ContractResult",
    "Decision",
    "Proposal",
    "ProposalOutcome",
    "RefusedProposal",
    "contract_net",
    "decline",
    "metadata_score",
    "propose",
]

CFP: Final = "contract.cfp"
PROPOSE: Final = "contract.propose"
DECLINE: Final = "contract.decline"
AWARD: Final = "contract.award"
REJECT: Final = "contract.reject"


class Proposal(msgspec.Struct, frozen=True, kw_only=True):
    """A valid proposal: who bid, its score, and the proposal event."""

    sender: str
    score: float
    event: Event


class RefusedProposal(msgspec.Struct, frozen=True, kw_only=True):
    """A proposal that could not be scored (or repeated a bidder), with the reason."""

    sender: str
    reason: str
    event: Event


class ContractResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one contract-net round.

    Attributes:
        cfp: the call for proposals as published; its correlation id names the round.
        proposals: the valid proposals, in arrival order.
        awarded: the best ``max_awards`` of them, best first (ties go to the earlier).
        rejected: the other valid proposals, in arrival order.
        refused: proposals without a usable score, or repeats of a bidder; they are
            sent a reject with the reason.
        declined: the senders that declined to bid.
        unrouted: the CFP reached no subscriber: nobody could bid (returned at once).
        timed_out: the window ran out (rather than ``expected`` answers arriving first).
        ignored: events in the inbox that were not answers to this CFP.
    """

    cfp: Event
    proposals: tuple[Proposal, ...]
    awarded: tuple[Proposal, ...]
    rejected: tuple[Proposal, ...]
    refused: tuple[RefusedProposal, ...]
    declined: tuple[str, ...]
    unrouted: bool
    timed_out: bool
    ignored: int = 0

    @property
    def answered(self) -> int:
        """Answers that arrived in the window: proposals, refused ones and declines."""
        return len(self.proposals) + len(self.refused) + len(self.declined)


class Decision(enum.Enum):
    """How a bidder's proposal ended."""

    AWARDED = "awarded"
    REJECTED = "rejected"
    LATE = "late"
    """The proposal reached nobody: the window had closed, or the manager is gone."""
    TIMED_OUT = "timed_out"
    """No award or reject came within the bidder's timeout."""


class ProposalOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`propose` learned.

    Attributes:
        decision: awarded, rejected, late or timed out.
        proposal: the proposal as published.
        event: the award or reject event, if one came.
        reason: the manager's reason for a reject, if it gave one.
    """

    decision: Decision
    proposal: Event
    event: Event | None = None
    reason: str = ""

    @property
    def awarded(self) -> bool:
        return self.decision is Decision.AWARDED


def metadata_score(proposal: Event) -> float:
    """The default scorer: the number in the proposal's ``score`` metadata.

    Raises:
        ValueError: there is none, or it is not a number.
    """
    raw = proposal.metadata.get("score")
    if raw is None:
        raise ValueError("the proposal has no 'score' in its metadata")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"score {raw!r} is not a number") from None


def _score(fn: Callable[[Event], float] | None, proposal: Event) -> float | str:
    """The proposal's score, or why it has none. Never raises: a bad bid is not our crash."""
    try:
        value = metadata_score(proposal) if fn is None else fn(proposal)
    except Exception as exc:
        return str(exc) if fn is None else f"the score function raised {exc!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"score {value!r} is not a number"
    if math.isnan(value):
        return "score is NaN"
    if math.isinf(value):
        return "score is not finite"
    return float(value)


async def contract_net(
    bus: EventBus,
    topic: str,
    task: bytes | Event = b"",
    *,
    window: float,
    max_awards: int = 1,
    score: Callable[[Event], float] | None = None,
    expected: int | None = None,
    sender: str = "",
    parent: Event | None = None,
    type: str = CFP,
) -> ContractResult:
    """Run one contract-net round: call for proposals on ``topic``, collect them for
    ``window`` seconds (or until ``expected`` answers), award the best ``max_awards``.

    Proposals are replies to the CFP with type ``contract.propose`` and the CFP's correlation
    id (what :func:`propose` sends); ``contract.decline`` replies count as answers without a
    bid. Scores come from ``score`` (default: :func:`metadata_score`); a proposal whose score
    is not a finite number, whose scorer raised, or whose sender already bid, is refused with
    the reason, never crashing the round. Each bidder (by non-empty sender) is counted once.

    When the window closes the inbox is closed first (later proposals reach nobody: their
    bidders see :attr:`Decision.LATE`), then every proposal is answered, awards best first,
    then rejects. Sending those is part of the call and may wait for a full bidder's mailbox;
    cancelled meanwhile, the rest get no answer (bidders bound their wait with a timeout).

    Args:
        bus: the bus to use.
        topic: where to publish the call for proposals.
        task: the CFP body, or a whole :class:`Event`.
        window: seconds to collect proposals.
        max_awards: how many proposals to award, at most.
        score: scores a proposal; higher is better.
        expected: close the window early once this many answers have arrived.
        sender: the manager's agent id; names the inbox.
        parent: the event being handled, when called from a handler.
        type: the event type of a CFP built from bytes.

    Raises:
        InvalidArgument: a bad ``window``, ``max_awards``, ``expected`` or ``sender``.
        BusClosed: the bus closed during the window.
        InvalidTopic: ``topic`` is malformed.
    """
    check_timeout(window, "window")
    check_sender(sender)
    if isinstance(max_awards, bool) or not isinstance(max_awards, int) or max_awards < 1:
        raise InvalidArgument(f"max_awards must be an int >= 1, not {max_awards!r}")
    if expected is not None and (
        isinstance(expected, bool) or not isinstance(expected, int) or expected < 1
    ):
        raise InvalidArgument(f"expected must be None or an int >= 1, not {expected!r}")
    corr = new_id()
    inbox = inbox_topic(sender, corr)
    cfp = outgoing(
        task, type=type, sender=sender, correlation_id=corr, reply_to=inbox, parent=parent
    )
    proposals: list[Proposal] = []
    refused: list[RefusedProposal] = []
    declined: list[str] = []
    bidders: set[str] = set()
    ignored = 0
    routed = True
    size = (expected or 2048) + INBOX_SLACK
    async with bus.subscribe(inbox, qos=QoS.BATCHED, buffer_size=size) as inbox_sub:
        with anyio.move_on_after(window) as scope:
            routed = await publish_routed(bus, topic, cfp)
            while routed and (
                expected is None or len(proposals) + len(refused) + len(declined) < expected
            ):
                try:
                    answer = (await inbox_sub.receive()).event
                except SubscriptionClosed:
                    raise BusClosed("the bus closed during a contract-net window") from None
                env = answer.envelope
                if env.correlation_id != corr or answer.type not in (PROPOSE, DECLINE):
                    ignored += 1
                    continue
                bidder = env.sender
                if bidder and bidder in bidders:
                    refused.append(
                        RefusedProposal(sender=bidder, reason="duplicate bid", event=answer)
                    )
                    continue
                bidders.add(bidder)
                if answer.type == DECLINE:
                    declined.append(bidder)
                    continue
                value = _score(score, answer)
                if isinstance(value, str):
                    refused.append(RefusedProposal(sender=bidder, reason=value, event=answer))
                else:
                    proposals.append(Proposal(sender=bidder, score=value, event=answer))
    ranked = sorted(range(len(proposals)), key=lambda i: (-proposals[i].score, i))
    winners = set(ranked[:max_awards])
    awarded = tuple(proposals[i] for i in ranked[:max_awards])
    rejected = tuple(p for i, p in enumerate(proposals) if i not in winners)
    for p in awarded:
        await _decide(bus, p.event, AWARD, sender, {"score": repr(p.score)})
    for p in rejected:
        await _decide(bus, p.event, REJECT, sender, {"score": repr(p.score), "reason": "outbid"})
    for r in refused:
        await _decide(bus, r.event, REJECT, sender, {"reason": r.reason})
    return ContractResult(
        cfp=cfp,
        proposals=tuple(proposals),
        awarded=awarded,
        rejected=rejected,
        refused=tuple(refused),
        declined=tuple(declined),
        unrouted=not routed,
        timed_out=scope.cancelled_caught,
        ignored=ignored,
    )


async def _decide(
    bus: EventBus, proposal: Event, kind: str, sender: str, meta: dict[str, str]
) -> None:
    try:
        topic = reply_topic(proposal)
    except ValueError:
        return  # a proposal with no reply_to and no sender cannot be told anything
    envelope = reply_envelope(proposal, sender=sender)
    await bus.publish(topic, Event(type=kind, source=sender, metadata=meta, envelope=envelope))


def _check_cfp(cfp: Event) -> str:
    if not isinstance(cfp, Event):
        raise InvalidArgument(f"cfp must be an Event, not {type(cfp).__name__}")
    try:
        return reply_topic(cfp)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


async def propose(
    bus: EventBus,
    cfp: Event,
    *,
    sender: str,
    score: float,
    timeout: float,
    payload: bytes = b"",
    metadata: Mapping[str, str] | None = None,
) -> ProposalOutcome:
    """Bid on a call for proposals and wait for the manager's decision.

    The proposal carries ``score`` in its ``score`` metadata (what the default scorer reads)
    and a private inbox as ``reply_to``, subscribed before it is sent and closed on return.

    Args:
        bus: the bus to use.
        cfp: the call for proposals being answered.
        sender: the bidding agent's id (one topic segment); the manager counts one bid per
            sender.
        score: the bid's score, a finite number; higher is better.
        timeout: seconds to wait for the award or reject.
        payload: the proposal's body.
        metadata: more metadata for the proposal (``score`` is set from ``score``).

    Returns:
        A :class:`ProposalOutcome`: awarded, rejected (with the reason), late (the proposal
        reached nobody: the window had closed) or timed out.

    Raises:
        InvalidArgument: a score that is not a finite number, a CFP with nowhere to answer, a
            bad ``sender`` or ``timeout``.
    """
    check_sender(sender)
    check_timeout(timeout)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise InvalidArgument(f"score must be a finite number, not {score!r}")
    topic = _check_cfp(cfp)
    token = new_id()
    inbox = inbox_topic(sender, token)
    meta = dict(metadata or {})
    meta["score"] = repr(float(score))
    envelope = msgspec.structs.replace(reply_envelope(cfp, sender=sender), reply_to=inbox)
    proposal = Event(type=PROPOSE, source=sender, payload=payload, metadata=meta, envelope=envelope)
    corr = envelope.correlation_id
    async with bus.subscribe(inbox, qos=QoS.BATCHED, buffer_size=INBOX_SLACK) as inbox_sub:
        with anyio.move_on_after(timeout):
            if not await publish_routed(bus, topic, proposal):
                return ProposalOutcome(decision=Decision.LATE, proposal=proposal)
            while True:
                try:
                    answer = (await inbox_sub.receive()).event
                except SubscriptionClosed:
                    raise BusClosed("the bus closed while waiting for a decision") from None
                if answer.envelope.correlation_id != corr:
                    continue
                if answer.type == AWARD:
                    return ProposalOutcome(
                        decision=Decision.AWARDED, proposal=proposal, event=answer
                    )
                if answer.type == REJECT:
                    return ProposalOutcome(
                        decision=Decision.REJECTED,
                        proposal=proposal,
                        event=answer,
                        reason=answer.metadata.get("reason", ""),
                    )
    return ProposalOutcome(decision=Decision.TIMED_OUT, proposal=proposal)


async def decline(bus: EventBus, cfp: Event, *, sender: str, reason: str = "") -> Event:
    """Answer a call for proposals with no bid (it counts towards the manager's ``expected``).

    Returns:
        The decline as published.

    Raises:
        InvalidArgument: the CFP has nowhere to answer.
    """
    topic = _check_cfp(cfp)
    meta = {"reason": reason} if reason else {}
    event = Event(
        type=DECLINE, source=sender, metadata=meta, envelope=reply_envelope(cfp, sender=sender)
    )
    await bus.publish(topic, event)
    return event
