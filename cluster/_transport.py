"""Several ``loom serve`` nodes sharing one NATS act as one bus: :class:`ClusterTransport`.

It implements the runtime's ``Transport`` seam (``runtime/_transport.py``): the bus routes to
its own subscriptions itself and hands every publish here; this carries it to the *other*
nodes that hold a matching subscription, and hands what they send to the bus's
``deliver_inbound``. ``docs/cluster.md`` is the user's account; in short:

* **Interest first.** Every node announces the patterns its subscriptions hold, per tier
  (``Announce`` on ``{prefix}.interest``), when they change and every heartbeat. A publish
  goes on the wire only to nodes whose interest matches its topic; with no remote interest
  at all it costs one attribute test. A node that says it is stopping has its interest
  dropped at once. A node silent for ``expire_after_s`` is *silent*: publishers stop waiting
  for it, and what is meant for it is held (``hold_silent_s``, ``hold_silent_bytes``), since
  a node whose NATS server hangs is alive and comes back in the same life: heard again, its
  link resumes on the same numbering and nothing lossless is lost. Past the hold it is
  dropped (killed, cut off for good), and what was held for it is counted lost.
* **Realtime** events go over core NATS, at most once: what NATS or a full buffer loses is
  lost, and counted on the receiving node (frames carry event numbers, so gaps are seen).
* **Batched and Background** events go in numbered frames on a per-destination link with a
  window of ``window`` unacknowledged frames. The receiver acknowledges a frame only once
  ``deliver_inbound`` returned for all of its events, so a full lossless subscriber there
  stops the acks, the window fills, and the publisher here waits: backpressure, not loss.
  Acks are cumulative: frames the receiver finds waiting together share one.
  Frames not acknowledged in time (a NATS restart, a dropped message) are sent again, from
  the first unacknowledged on (go-back-N); the receiver drops what it has already had.
* **Order**: one node's events reach another in publish order, on each link (one NATS
  connection keeps order; the receiver takes lossless frames strictly in sequence).
* **No echo**: events are addressed to other nodes by name; a node never sends to itself.

nats-py runs on asyncio only, so this does too.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import anyio
import msgspec
import nats.errors
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from loom.runtime import BusClosed, Event, InvalidArgument, LoomError, QoS, WouldBlock
from loom.runtime.lowlevel import Inbound, TopicTrie, validate_pattern

from ._inbox import Inbox
from ._wire import Ack, Announce, Frame, Subjects

__all__ = ["ClusterStats", "ClusterTransport", "PeerStats"]

log = logging.getLogger("loom.cluster")

_DEFAULT_PREFIX: Final = "_loom.node"
# Per frame: events and (roughly) bytes. NATS refuses payloads over its max_payload (1 MiB
# by default); a frame stays well under it.
_FRAME_EVENTS: Final = 256
_FRAME_BYTES: Final = 256 * 1024
_EVENT_OVERHEAD: Final = 96  # what an event's fields add to its payload, roughly, on the wire

_encode = msgspec.msgpack.Encoder().encode
_decode_frame = msgspec.msgpack.Decoder(Frame).decode
_decode_ack = msgspec.msgpack.Decoder(Ack).decode
_decode_announce = msgspec.msgpack.Decoder(Announce).decode
# Lossless frames one acknowledgement covers at most while more wait to be taken.
_ACK_EVERY: Final = 8


class PeerStats(msgspec.Struct, frozen=True, kw_only=True):
    """Another node as one node's transport sees it (:attr:`ClusterStats.links`).

    Attributes:
        node: its name.
        patterns: the ``(pattern, tier)`` pairs its subscriptions hold: its interest.
        unacked_frames: lossless frames sent to it and not yet acknowledged.
        queued_events: events batched for it and not yet sent (both tiers).
    """

    node: str
    patterns: int
    unacked_frames: int
    queued_events: int


class ClusterStats(msgspec.Struct, frozen=True, kw_only=True):
    """What one node's transport has done (:meth:`ClusterTransport.statistics`).

    Attributes:
        node: this node's name.
        peers: the other nodes it knows alive, by name.
        sent_events: events put on the wire (once per destination node).
        sent_frames: frames put on the wire, retransmissions excluded.
        retransmitted_frames: lossless frames sent again (no acknowledgement in time).
        unacked_frames: lossless frames sent and not yet acknowledged, over all peers.
        received_events: events taken from the wire and handed to the local bus.
        duplicate_frames: lossless frames received again and dropped (already delivered).
        realtime_lost: realtime events that other nodes sent here and never arrived (seen
            as gaps in their numbering).
        realtime_send_failed: realtime events that could not be handed to NATS (its
            buffer full while disconnected).
        sent_lossless_events: of ``sent_events``, the Batched and Background ones.
        sent_realtime_events: of ``sent_events``, the Realtime ones.
        received_lossless_events: of ``received_events``, the Batched and Background ones.
        received_realtime_events: of ``received_events``, the Realtime ones.
        links: each other node alive: its interest and what is in flight to it.
        reconnects: times the NATS connection came back after it was lost.
        silent: the other nodes silent past ``expire_after_s`` whose links are held (not
            in ``peers``): what is meant for them is kept until they are heard again.
        held_events: lossless events held now for the silent nodes, not yet sent.
        lossless_dropped: lossless events given up: in flight or held for a node dropped
            (it left, restarted, or stayed silent past the hold or its byte limit).
    """

    node: str
    peers: tuple[str, ...]
    sent_events: int
    sent_frames: int
    retransmitted_frames: int
    unacked_frames: int
    received_events: int
    duplicate_frames: int
    realtime_lost: int
    realtime_send_failed: int
    sent_lossless_events: int = 0
    sent_realtime_events: int = 0
    received_lossless_events: int = 0
    received_realtime_events: int = 0
    links: tuple[PeerStats, ...] = ()
    reconnects: int = 0
    silent: tuple[str, ...] = ()
    held_events: int = 0
    lossless_dropped: int = 0


class _Peer:
    """Another node, as this one sees it: its interest, and the links to it."""

    def __init__(self, name: str, epoch: str, now: float, link: str) -> None:
        self.name = name
        self.epoch = epoch
        # This node's side of the link to it, as its frames name it (``Frame.epoch``): this
        # node's epoch and a number per link made. A node silent past the hold (dropped) and
        # heard again in the same life gets a new link, numbered from 0, which the receiver
        # takes as a new sender's: it must not mistake the new frames for the old link's
        # duplicates. One heard again within the hold keeps this one.
        self.link = link
        self.seen = now
        self.dead = False
        # Silent past the expiry: publishers no longer wait for its window; full batches
        # for it are held (oldest first, with their sizes) until it is heard again.
        self.silent = False
        self.held: deque[tuple[list[tuple[str, Event]], int]] = deque()
        self.held_bytes = 0
        self.patterns: set[tuple[str, int]] = set()
        self.trie: TopicTrie[bool] = TopicTrie()  # pattern -> lossless, one per (pattern, tier)
        # Lossless link: the batch being filled, and the frames sent and not yet acked.
        self.ll_out: list[tuple[str, Event]] = []
        self.ll_bytes = 0
        self.next_seq = 0
        self.unacked: deque[tuple[int, bytes, int]] = deque()  # (seq, frame, its events)
        self.progress = now  # the last send or acknowledgement: the retransmit clock
        self.rto = 0.0  # set by the transport
        self.room = anyio.Event()  # set when acknowledgements free the window
        # Realtime link: the batch, and the number of the next event on it.
        self.rt_out: list[tuple[str, Event]] = []
        self.rt_bytes = 0
        self.rt_next = 0

    def set_patterns(self, patterns: Iterable[tuple[str, int]]) -> bool:
        """Apply an announced snapshot; whether anything changed."""
        new = set(patterns)
        if new == self.patterns:
            return False
        for pattern, tier in self.patterns - new:
            self.trie.remove(pattern.split("."), QoS(tier).lossless)
        for pattern, tier in new - self.patterns:
            self.trie.insert(pattern.split("."), QoS(tier).lossless)
        self.patterns = new
        return True

    def wake(self) -> None:
        self.room.set()
        self.room = anyio.Event()


class _Source:
    """What this node has received on one link from another node (``Frame.epoch``)."""

    __slots__ = ("epoch", "expected", "rt_next")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.expected = 0  # the next lossless frame to deliver
        self.rt_next = 0  # the next realtime event number


class ClusterTransport:
    """The bus's transport between ``loom serve`` nodes sharing one NATS (see the module).

    Args:
        client: a connected nats-py client (the server's one connection); the transport
            neither opens nor closes it.
        node: this node's name, one subject token, unique among the nodes.
        prefix: the subjects' prefix: nodes with the same one form one cluster.
        window: lossless frames in flight to one node before the publisher waits.
        heartbeat_s: how often interest is announced (also the liveness signal).
        expire_after_s: a node not heard from for this long while connected is dropped
            (default: three heartbeats).
        retransmit_after_s: a lossless frame unacknowledged this long is sent again (then
            twice as long, up to 8 s, until an acknowledgement comes).
        hold_silent_s: how long after its expiry a silent node's link is kept (what is in
            flight to it, and the lossless events published for it meanwhile) in case it is
            heard again in the same life; then it is dropped and they are lost (counted).
        hold_silent_bytes: the most lossless payload held for one silent node; past it the
            node is dropped at once, as past ``hold_silent_s``.
        discovery_s: at start, how long to wait for the other nodes' interest before
            reporting ready (they answer a hello at once; this bounds the wait).
    """

    def __init__(
        self,
        client: Client,
        node: str,
        *,
        prefix: str = _DEFAULT_PREFIX,
        window: int = 32,
        heartbeat_s: float = 1.0,
        expire_after_s: float | None = None,
        retransmit_after_s: float = 1.0,
        discovery_s: float = 0.2,
        hold_silent_s: float = 30.0,
        hold_silent_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        validate_pattern(node)
        if "." in node or "*" in node or ">" in node:
            raise InvalidArgument(f"a node name is one subject token, not {node!r}")
        if window < 1:
            raise InvalidArgument(f"window must be >= 1, not {window!r}")
        if heartbeat_s <= 0:
            raise InvalidArgument(f"heartbeat_s must be > 0, not {heartbeat_s!r}")
        if hold_silent_s < 0 or hold_silent_bytes < 0:
            raise InvalidArgument(
                f"hold_silent_s and hold_silent_bytes must be >= 0, not "
                f"{hold_silent_s!r} and {hold_silent_bytes!r}"
            )
        self._nc = client
        self.node = node
        self.epoch = secrets.token_hex(8)
        self._subjects = Subjects(prefix)
        self._window = window
        self._heartbeat_s = heartbeat_s
        self._expire_s = 3 * heartbeat_s if expire_after_s is None else expire_after_s
        self._rto = retransmit_after_s
        self._discovery_s = discovery_s
        self._hold_s = hold_silent_s
        self._hold_bytes = hold_silent_bytes
        # Local interest, (pattern, tier) -> None in arrival order.
        self._local: dict[tuple[str, int], None] = {}
        self._announce_due = False
        self._peers: dict[str, _Peer] = {}
        self._sources: dict[str, _Source] = {}
        self._retired: dict[str, None] = {}  # links of senders replaced by a newer one
        self._links = 0  # links made to other nodes (each peer, each time it is heard anew)
        # Any remote interest at all: the one test a publish pays when there is none.
        self._any = False
        self._gen = 0
        # InterestGate: told at once when remote interest changes, so the bus recomputes
        # its cached `wants` answers.
        self._on_change: list[Callable[[], None]] = []
        self._routes: dict[str, tuple[int, tuple[tuple[_Peer, bool], ...]]] = {}
        self._kicked = False
        self._kick = anyio.Event()
        self._duplicate_name_said = False
        self._inbound: Inbound | None = None
        self._running = False
        # Statistics.
        self._sent_ll = 0
        self._sent_rt = 0
        self._sent_frames = 0
        self._retransmitted = 0
        self._received_ll = 0
        self._received_rt = 0
        self._duplicates = 0
        self._rt_lost = 0
        self._rt_send_failed = 0
        self._ll_dropped = 0

    # ------------------------------------------------------------------ the Transport seam

    async def run(self, inbound: Inbound, *, task_status: TaskStatus[None]) -> None:
        self._inbound = inbound
        self._kick = anyio.Event()
        s = self._subjects
        subs: list[NatsSubscription] = []
        # The busy ones (frames, acks) through an Inbox: no task per message.
        lossless, realtime, acks = Inbox(), Inbox(), Inbox()
        try:
            # Bounded by nats-py: past its pending limit a subscription drops (and says so
            # through the connection's error callback). For lossless frames that is a
            # retransmission later; for realtime ones a counted loss.
            announce = await self._nc.subscribe(s.interest, pending_msgs_limit=65_536)
            subs.append(announce)
            subs.append(
                await self._nc.subscribe(
                    s.lossless(self.node), cb=lossless.put, pending_msgs_limit=4 * self._window * 64
                )
            )
            subs.append(
                await self._nc.subscribe(
                    s.realtime(self.node), cb=realtime.put, pending_msgs_limit=8_192
                )
            )
            subs.append(
                await self._nc.subscribe(s.ack(self.node), cb=acks.put, pending_msgs_limit=65_536)
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._take_announces, announce)
                tg.start_soon(self._receiving, self._take_lossless, lossless)
                tg.start_soon(self._receiving, self._take_realtime, realtime)
                tg.start_soon(self._take_acks, acks)
                await self._announce(hello=True)
                # The others answer a hello at once: a short wait lets the first publishes
                # here already reach the subscriptions that exist elsewhere.
                await anyio.sleep(self._discovery_s)
                self._running = True
                tg.start_soon(self._flusher)
                tg.start_soon(self._clock)
                log.info("cluster: node %s up (prefix %s)", self.node, s.prefix)
                task_status.started()
        finally:
            self._running = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                if self._nc.is_connected:
                    try:
                        await self._announce(gone=True)
                        await self._nc.flush(timeout=1)
                    except (nats.errors.Error, OSError) as exc:
                        log.debug("cluster: goodbye not sent: %s", exc)
                for sub in subs:
                    with contextlib.suppress(nats.errors.Error, OSError):
                        await sub.unsubscribe()
                for inbox in (lossless, realtime, acks):
                    inbox.close()
            for peer in self._peers.values():
                peer.dead = True
                peer.wake()

    async def publish(self, topic: str, event: Event) -> None:
        if not self._any:
            return
        route = self._routes.get(topic)
        if route is None or route[0] != self._gen:
            route = self._route(topic)
        for peer, lossless in route[1]:
            if lossless:
                # A full batch goes out now if the window has room; else this waits for an
                # acknowledgement: the far side's backpressure, reaching this publisher.
                while len(peer.ll_out) >= _FRAME_EVENTS or peer.ll_bytes >= _FRAME_BYTES:
                    if peer.dead:
                        break
                    if peer.silent:
                        self._hold(peer)  # kept for when it is heard again; nobody waits
                    elif len(peer.unacked) < self._window:
                        await self._send_lossless(peer)
                    else:
                        await peer.room.wait()
                if peer.dead:
                    continue
                peer.ll_out.append((topic, event))
                peer.ll_bytes += len(event.payload) + _EVENT_OVERHEAD
            else:
                if len(peer.rt_out) >= _FRAME_EVENTS or peer.rt_bytes >= _FRAME_BYTES:
                    await self._send_realtime(peer)
                peer.rt_out.append((topic, event))
                peer.rt_bytes += len(event.payload) + _EVENT_OVERHEAD
        if route[1] and not self._kicked:
            self._kicked = True
            self._kick.set()

    def publish_nowait(self, topic: str, event: Event) -> None:
        if not self._any:
            return
        route = self._routes.get(topic)
        if route is None or route[0] != self._gen:
            route = self._route(topic)
        for peer, lossless in route[1]:
            if lossless and (len(peer.ll_out) >= _FRAME_EVENTS or peer.ll_bytes >= _FRAME_BYTES):
                raise WouldBlock(f"the link to node {peer.name} is full")
        for peer, lossless in route[1]:
            size = len(event.payload) + _EVENT_OVERHEAD
            if lossless:
                peer.ll_out.append((topic, event))
                peer.ll_bytes += size
            elif len(peer.rt_out) < _FRAME_EVENTS and peer.rt_bytes < _FRAME_BYTES:
                peer.rt_out.append((topic, event))
                peer.rt_bytes += size
            else:
                self._rt_send_failed += 1  # realtime: dropped rather than waited for
        if route[1] and not self._kicked:
            self._kicked = True
            self._kick.set()

    def wants(self, topic: str) -> bool:
        """(InterestGate) Whether another node holds a subscription ``topic`` matches."""
        if not self._any:
            return False
        route = self._routes.get(topic)
        if route is None or route[0] != self._gen:
            route = self._route(topic)
        return bool(route[1])

    def on_interest_change(self, changed: Callable[[], None]) -> None:
        """(InterestGate) Call ``changed`` whenever remote interest changes."""
        self._on_change.append(changed)

    def add_interest(self, pattern: str, qos: QoS) -> None:
        self._local[(pattern, int(qos))] = None
        self._interest_changed()

    def remove_interest(self, pattern: str, qos: QoS) -> None:
        self._local.pop((pattern, int(qos)), None)
        self._interest_changed()

    # ------------------------------------------------------------------ introspection

    def statistics(self) -> ClusterStats:
        """What this node's transport has done so far."""
        known = sorted(self._peers.values(), key=lambda p: p.name)
        peers = [p for p in known if not p.silent]
        return ClusterStats(
            node=self.node,
            peers=tuple(p.name for p in peers),
            sent_events=self._sent_ll + self._sent_rt,
            sent_frames=self._sent_frames,
            retransmitted_frames=self._retransmitted,
            unacked_frames=sum(len(p.unacked) for p in known),
            received_events=self._received_ll + self._received_rt,
            duplicate_frames=self._duplicates,
            realtime_lost=self._rt_lost,
            realtime_send_failed=self._rt_send_failed,
            sent_lossless_events=self._sent_ll,
            sent_realtime_events=self._sent_rt,
            received_lossless_events=self._received_ll,
            received_realtime_events=self._received_rt,
            links=tuple(
                PeerStats(
                    node=p.name,
                    patterns=len(p.patterns),
                    unacked_frames=len(p.unacked),
                    queued_events=len(p.ll_out) + len(p.rt_out),
                )
                for p in peers
            ),
            reconnects=int(self._nc.stats.get("reconnects", 0)),
            silent=tuple(p.name for p in known if p.silent),
            held_events=sum(
                len(p.ll_out) + sum(len(b) for b, _ in p.held) for p in known if p.silent
            ),
            lossless_dropped=self._ll_dropped,
        )

    def remote_interest(self) -> dict[str, frozenset[tuple[str, QoS]]]:
        """The other nodes alive (not silent) and the ``(pattern, tier)`` pairs each holds."""
        return {
            name: frozenset((p, QoS(t)) for p, t in peer.patterns)
            for name, peer in self._peers.items()
            if not peer.silent
        }

    # ------------------------------------------------------------------ routing

    def _route(self, topic: str) -> tuple[int, tuple[tuple[_Peer, bool], ...]]:
        parts = topic.split(".")
        hops: list[tuple[_Peer, bool]] = []
        for peer in self._peers.values():
            found = peer.trie.match(parts)
            if found:
                hops.append((peer, any(found)))  # lossless if any of its patterns is
        route = (self._gen, tuple(hops))
        if len(self._routes) >= 10_000:
            self._routes.clear()  # bounded; rebuilt on demand
        self._routes[topic] = route
        return route

    def _changed(self) -> None:
        self._gen += 1
        self._any = any(peer.patterns for peer in self._peers.values())
        for changed in self._on_change:
            changed()

    # ------------------------------------------------------------------ sending

    async def _send_lossless(self, peer: _Peer) -> None:
        if peer.held:  # batches held while it was silent go first: they are older
            events, size = peer.held.popleft()
            peer.held_bytes -= size
        else:
            events, peer.ll_out, peer.ll_bytes = peer.ll_out, [], 0
        seq = peer.next_seq
        peer.next_seq += 1
        data = _encode(
            Frame(src=self.node, epoch=peer.link, dst_epoch=peer.epoch, seq=seq, events=events)
        )
        if not peer.unacked:
            peer.progress = time.monotonic()  # the retransmit clock runs from the oldest
        peer.unacked.append((seq, data, len(events)))
        self._sent_frames += 1
        self._sent_ll += len(events)
        try:
            await self._nc.publish(self._subjects.lossless(peer.name), data)
        except (nats.errors.Error, OSError) as exc:
            # Kept in the window: the retransmit clock sends it again.
            log.debug("cluster: frame %d to %s not sent now: %s", seq, peer.name, exc)

    async def _send_realtime(self, peer: _Peer) -> None:
        events, peer.rt_out, peer.rt_bytes = peer.rt_out, [], 0
        first = peer.rt_next
        peer.rt_next += len(events)
        data = _encode(
            Frame(src=self.node, epoch=peer.link, dst_epoch=peer.epoch, seq=first, events=events)
        )
        try:
            await self._nc.publish(self._subjects.realtime(peer.name), data)
        except (nats.errors.Error, OSError):
            self._rt_send_failed += len(events)  # at most once: lost, and counted
            return
        self._sent_frames += 1
        self._sent_rt += len(events)

    async def _flusher(self) -> None:
        """Send what publishes batched, once per turn of the loop that had any: a publisher
        that never yields fills frames; one that does sends each event at once."""
        while True:
            await self._kick.wait()
            self._kick = anyio.Event()
            self._kicked = False
            if self._announce_due:  # interest changed here: the others learn it now
                try:
                    await self._announce()
                except (nats.errors.Error, OSError) as exc:
                    self._announce_due = True  # the clock tries again
                    log.debug("cluster: announcement not sent now: %s", exc)
            for peer in list(self._peers.values()):
                if peer.rt_out:
                    await self._send_realtime(peer)
                if peer.silent:
                    continue  # lossless frames wait for it to be heard again
                while peer.held and len(peer.unacked) < self._window:
                    await self._send_lossless(peer)
                if peer.ll_out and len(peer.unacked) < self._window:
                    await self._send_lossless(peer)

    # ------------------------------------------------------------------ interest

    def _interest_changed(self) -> None:
        self._announce_due = True
        if not self._kicked:
            self._kicked = True
            self._kick.set()

    async def _announce(self, *, hello: bool = False, gone: bool = False) -> None:
        self._announce_due = False
        message = Announce(
            node=self.node,
            epoch=self.epoch,
            patterns=[] if gone else list(self._local),
            hello=hello,
            gone=gone,
        )
        await self._nc.publish(self._subjects.interest, _encode(message))

    async def _take_announces(self, sub: NatsSubscription) -> None:
        async for msg in sub.messages:
            try:
                a = _decode_announce(msg.data)
            except msgspec.ValidationError as exc:
                log.warning("cluster: malformed announcement dropped: %s", exc)
                continue
            if a.node == self.node:
                if a.epoch != self.epoch and not self._duplicate_name_said:
                    self._duplicate_name_said = True
                    log.error(
                        "cluster: another node is also named %r: give each `loom serve "
                        "--node NAME` its own name (events between them are lost)",
                        self.node,
                    )
                continue
            try:
                await self._on_announce(a)
            except (nats.errors.Error, OSError) as exc:
                log.debug("cluster: announcement not answered: %s", exc)  # the heartbeat will

    async def _on_announce(self, a: Announce) -> None:
        peer = self._peers.get(a.node)
        if peer is not None and peer.epoch != a.epoch:
            self._drop(peer, "restarted")
            peer = None
        if a.gone:
            if peer is not None:
                self._drop(peer, "left")
            return
        now = time.monotonic()
        if peer is None:
            self._links += 1
            peer = _Peer(a.node, a.epoch, now, f"{self.epoch}-{self._links}")
            peer.rto = self._rto
            self._peers[a.node] = peer
            log.info("cluster: node %s joined (%d patterns)", a.node, len(a.patterns))
            if self._running or a.hello:
                await self._announce()  # so the newcomer learns this node's interest now
        elif a.hello:
            await self._announce()
        peer.seen = now
        if peer.silent:
            self._resume(peer)
        if peer.set_patterns(a.patterns):
            self._changed()

    def _drop(self, peer: _Peer, why: str) -> None:
        """Forget a node: its interest, and what was in flight to it (its subscriptions
        are gone with it). Publishers waiting for its window go on."""
        if self._peers.get(peer.name) is peer:
            del self._peers[peer.name]
        peer.dead = True
        lost = len(peer.ll_out) + sum(n for _, _, n in peer.unacked)
        lost += sum(len(events) for events, _ in peer.held)
        self._ll_dropped += lost
        peer.ll_out, peer.unacked, peer.held, peer.held_bytes = [], deque(), deque(), 0
        peer.wake()
        self._changed()
        log.warning(
            "cluster: node %s %s; its interest dropped%s",
            peer.name,
            why,
            f" ({lost} lossless events to it not delivered, not sent again)" if lost else "",
        )

    def _silence(self, peer: _Peer) -> None:
        """``peer`` said nothing for ``expire_after_s``: killed, cut off, or its NATS server
        hangs (it notices only by its PINGs, later than this). Publishers stop waiting for
        it; its link and its interest are kept, and what is published for it is held, for
        ``hold_silent_s``: heard again in the same life, it gets all of it on the same link."""
        peer.silent = True
        peer.wake()  # publishers waiting for its window hold their batch instead
        log.warning(
            "cluster: node %s silent for %g s (expired); its link is held for %g s "
            "(lossless events for it kept, up to %d bytes)",
            peer.name,
            self._expire_s,
            self._hold_s,
            self._hold_bytes,
        )

    def _hold(self, peer: _Peer) -> None:
        """Keep ``peer``'s full batch for when it is heard again; drop it past the limit."""
        peer.held.append((peer.ll_out, peer.ll_bytes))
        peer.held_bytes += peer.ll_bytes
        peer.ll_out, peer.ll_bytes = [], 0
        if peer.held_bytes > self._hold_bytes:
            self._drop(peer, f"silent, with {self._hold_bytes} bytes held for it (the limit)")

    def _resume(self, peer: _Peer) -> None:
        """A silent ``peer`` is heard again in the same life: its link goes on where it
        stopped. The frames in flight are sent again at the clock's next tick (those sent
        into the silence were likely lost), then what was held; the receiver drops what it
        already has by sequence number."""
        peer.silent = False
        peer.rto = self._rto
        peer.progress = 0.0  # overdue: retransmitted now, not a timeout later
        held = len(peer.ll_out) + sum(len(events) for events, _ in peer.held)
        log.info(
            "cluster: node %s heard again; its link resumed (%d frames sent again, "
            "%d held events sent now)",
            peer.name,
            len(peer.unacked),
            held,
        )
        if not self._kicked:
            self._kicked = True
            self._kick.set()

    async def _clock(self) -> None:
        """Heartbeats, expiry and retransmission, on one tick."""
        tick = min(self._heartbeat_s, self._rto) / 4
        next_beat = time.monotonic() + self._heartbeat_s
        was_connected = True
        last = time.monotonic()
        while True:
            await anyio.sleep(tick)
            now = time.monotonic()
            # Time this process did not run (a starved event loop, a paused process) is not
            # silence of the others: their announcements and acknowledgements wait unread in
            # the inboxes meanwhile. Without this, the first tick after a stall expires every
            # node (and drops what is in flight to it) before those are read.
            stalled = now - last - tick
            last = now
            if stalled > tick:
                for peer in self._peers.values():
                    peer.seen = min(now, peer.seen + stalled)
                    peer.progress = min(now, peer.progress + stalled)
            connected = self._nc.is_connected
            if not connected or not was_connected:
                # Nothing can be heard while away: nobody expires for it, and frames are
                # resent once back, not counted against their timeout now.
                for peer in self._peers.values():
                    peer.seen = now
                    peer.progress = now
            was_connected = connected
            if not connected:
                continue
            try:
                if now >= next_beat or self._announce_due:
                    if now >= next_beat:
                        next_beat = now + self._heartbeat_s
                    await self._announce()
                for peer in list(self._peers.values()):
                    silence = now - peer.seen
                    if silence > self._expire_s + self._hold_s:
                        self._drop(
                            peer,
                            f"silent for {silence:.3g} s (past its hold)"
                            if peer.silent
                            else f"silent for {self._expire_s:g} s (expired)",
                        )
                        continue
                    if silence > self._expire_s:
                        if not peer.silent:
                            self._silence(peer)
                        continue  # nothing sent again into the silence
                    if peer.unacked and now - peer.progress > peer.rto:
                        await self._retransmit(peer, now)
            except (nats.errors.Error, OSError) as exc:
                log.debug("cluster: clock: %s", exc)

    async def _retransmit(self, peer: _Peer, now: float) -> None:
        peer.progress = now
        peer.rto = min(peer.rto * 2, 8.0)
        subject = self._subjects.lossless(peer.name)
        for _seq, data, _n in list(peer.unacked):
            self._retransmitted += 1
            await self._nc.publish(subject, data)

    # ------------------------------------------------------------------ receiving

    async def _receiving(self, take: Callable[[Inbox], Awaitable[None]], inbox: Inbox) -> None:
        try:
            await take(inbox)
        except BusClosed:
            # The bus is closing: nothing more is delivered here, and nothing more acked
            # (the sender keeps what it sent for this node's next life, or drops it).
            log.debug("cluster: bus closed; frames from other nodes no longer taken")

    async def _take_acks(self, inbox: Inbox) -> None:
        async for msg in inbox:
            try:
                ack = _decode_ack(msg.data)
            except msgspec.ValidationError:
                continue
            peer = self._peers.get(ack.node)
            if peer is None or peer.epoch != ack.epoch or ack.to_epoch != peer.link:
                continue  # for an earlier life of either side
            # An acknowledgement is as good a sign of life as an announcement: a node that
            # keeps acknowledging is not expired because its announcements came late (a
            # busy or reconnecting NATS path). Expiring it would throw away the frames in
            # flight to it, a loss on a lossless link.
            now = time.monotonic()
            peer.seen = now
            if peer.silent:
                self._resume(peer)
            freed = False
            while peer.unacked and peer.unacked[0][0] <= ack.seq:
                peer.unacked.popleft()
                freed = True
            if freed:
                peer.progress = now
                peer.rto = self._rto
                peer.wake()
                if (peer.ll_out or peer.held) and not self._kicked:
                    self._kicked = True
                    self._kick.set()

    def _source(self, frame: Frame) -> _Source | None:
        """The receiving state for the frame's sender and link; ``None`` for a frame of a
        link it has already replaced (a straggler must not reset the newer one's state)."""
        source = self._sources.get(frame.src)
        if source is None or source.epoch != frame.epoch:
            if frame.epoch in self._retired:
                return None
            if source is not None:
                self._retired[source.epoch] = None
                if len(self._retired) > 1024:  # bounded: the oldest lives are forgotten
                    del self._retired[next(iter(self._retired))]
            source = self._sources[frame.src] = _Source(frame.epoch)
        return source

    async def _take_lossless(self, inbox: Inbox) -> None:
        assert self._inbound is not None
        deliver = self._inbound.deliver_inbound
        # Acks are cumulative: while more frames already wait in the inbox, the ack of this
        # one is held and the next one's covers it (one ack per _ACK_EVERY frames at most,
        # not one per frame; a NATS publish, and a message for the sender to take, each).
        # It goes out as soon as the inbox is empty, so a sender never waits on a held ack
        # beyond the frames already here, nor its retransmit clock on them.
        held: tuple[str, Ack] | None = None  # (to whom, the ack) not sent yet
        covered = 0  # frames the held ack covers
        async for msg in inbox:
            frame = self._frame(msg)
            source = None if frame is None else self._source(frame)
            if frame is not None and source is not None:
                if frame.seq == source.expected:
                    # Waits while a lossless subscriber here is full: the ack waits too.
                    await self._deliver_all(deliver, frame.events)
                    source.expected += 1
                    self._received_ll += len(frame.events)
                elif frame.seq < source.expected:
                    self._duplicates += 1
                # else a gap: no ack; the sender goes back to the first one missing
                if frame.seq < source.expected:
                    if held is not None and (held[0], held[1].to_epoch) != (
                        frame.src,
                        frame.epoch,
                    ):
                        await self._send_ack(*held)  # another link's: not covered by this one
                    held = (
                        frame.src,
                        Ack(
                            node=self.node,
                            epoch=self.epoch,
                            to_epoch=frame.epoch,
                            seq=source.expected - 1,
                        ),
                    )
                    covered += 1
            if held is not None and (covered >= _ACK_EVERY or not inbox.waiting()):
                await self._send_ack(*held)
                held, covered = None, 0
            await checkpoint()

    async def _send_ack(self, to: str, ack: Ack) -> None:
        try:
            await self._nc.publish(self._subjects.ack(to), _encode(ack))
        except (nats.errors.Error, OSError) as exc:
            log.debug("cluster: ack to %s not sent: %s", to, exc)  # resent later

    async def _take_realtime(self, inbox: Inbox) -> None:
        assert self._inbound is not None
        deliver = self._inbound.deliver_inbound
        async for msg in inbox:
            frame = self._frame(msg)
            if frame is None:
                continue
            source = self._source(frame)
            if source is None:
                continue
            if frame.seq > source.rt_next:
                self._rt_lost += frame.seq - source.rt_next
                log.warning(
                    "cluster: %d realtime events from node %s lost on the way",
                    frame.seq - source.rt_next,
                    frame.src,
                )
            source.rt_next = max(source.rt_next, frame.seq + len(frame.events))
            await self._deliver_all(deliver, frame.events)
            self._received_rt += len(frame.events)
            await checkpoint()

    def _frame(self, msg: Msg) -> Frame | None:
        try:
            frame = _decode_frame(msg.data)
        except msgspec.ValidationError as exc:
            log.warning("cluster: malformed frame dropped: %s", exc)
            return None
        if frame.dst_epoch != self.epoch:
            return None  # sent to an earlier life of this node
        return frame

    async def _deliver_all(self, deliver: _Deliver, events: list[tuple[str, Event]]) -> None:
        """Hand a frame's events to the bus, in order: each at once where nothing here makes
        it wait (the bus's ``deliver_inbound_nowait``: no two coroutines per event, about
        0.15 us of the receiving node's CPU each), else awaited."""
        nowait: Callable[[str, Event], int] | None = getattr(
            self._inbound, "deliver_inbound_nowait", None
        )
        for topic, event in events:
            if nowait is not None:
                try:
                    nowait(topic, event)
                    continue
                except WouldBlock:
                    pass  # awaited below, in the same order
                except BusClosed:
                    raise
                except LoomError as exc:
                    log.warning("cluster: event on %r from another node dropped: %s", topic, exc)
                    continue
            await self._deliver(deliver, topic, event)

    async def _deliver(self, deliver: _Deliver, topic: str, event: Event) -> None:
        try:
            await deliver(topic, event)
        except BusClosed:
            raise
        except LoomError as exc:  # an invalid topic from a misbehaving peer: not ours to die of
            log.warning("cluster: event on %r from another node dropped: %s", topic, exc)


_Deliver = Callable[[str, Event], Awaitable["int | None"]]
