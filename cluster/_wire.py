"""What ``loom serve`` nodes say to each other over NATS (``docs/cluster.md``).

msgspec MessagePack, never protobuf: these never leave Loom's own processes. Subjects, for a
node named ``a`` (``prefix`` is ``_loom.node`` unless a test picks another):

* ``{prefix}.interest``: every node's :class:`Announce` (its subscription patterns by tier),
  on change, on a newcomer's hello, and every heartbeat; the heartbeat is also the liveness.
* ``{prefix}.a.ll``: lossless (Batched/Background) :class:`Frame` s for node ``a``, numbered
  per sender; ``{prefix}.a.rt``: realtime ones, numbered by event to count losses.
* ``{prefix}.a.ack``: :class:`Ack` s for frames node ``a`` sent.
"""

from __future__ import annotations

import msgspec

from loom.runtime import Event

__all__ = ["Ack", "Announce", "Frame", "Subjects"]


class Announce(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One node's whole interest, and that it is alive.

    Attributes:
        node: the node's name.
        epoch: random per process start: a restarted node is a new peer (frames in flight to
            its previous life are dropped, not mistaken for its).
        patterns: ``(pattern, tier)`` pairs (``QoS`` values) its local subscriptions hold.
        hello: the sender has just started: every node answers with its own at once.
        gone: the sender is stopping: drop it now, not at its expiry.
    """

    node: str
    epoch: str
    patterns: list[tuple[str, int]]
    hello: bool = False
    gone: bool = False


class Frame(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Events from one node to another, in publish order.

    Attributes:
        src: the sending node; ``epoch`` its link to the receiver: the sender's life and
            a number per link it made (a node dropped and heard again gets a new link).
        dst_epoch: the receiver's life this was sent to (a frame for a previous life of the
            receiver is ignored).
        seq: lossless: the frame's number on this link (from 0 per link);
            realtime: the number of the first event on this link (so gaps count losses).
        events: ``(topic, event)`` pairs; the event whole, envelope and traceparent included.
    """

    src: str
    epoch: str
    dst_epoch: str
    seq: int
    events: list[tuple[str, Event]]


class Ack(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Node ``node`` (life ``epoch``) has delivered every lossless frame up to ``seq`` that
    the acked node sent it on link ``to_epoch`` (``Frame.epoch``): cumulative."""

    node: str
    epoch: str
    to_epoch: str
    seq: int


class Subjects:
    """The subjects of one cluster (one ``prefix``)."""

    __slots__ = ("interest", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.interest = f"{prefix}.interest"

    def lossless(self, node: str) -> str:
        return f"{self.prefix}.{node}.ll"

    def realtime(self, node: str) -> str:
        return f"{self.prefix}.{node}.rt"

    def ack(self, node: str) -> str:
        return f"{self.prefix}.{node}.ack"
