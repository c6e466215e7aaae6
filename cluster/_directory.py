"""One directory over every node of a cluster, kept in a JetStream KV bucket.

Each node writes its own agents (local and bridge-connected) under ``agents.<id>``: status,
patterns, capabilities with their schemas, load and heartbeat; and itself under
``nodes.<name>``, every heartbeat interval. Every node watches the bucket and shows the
agents of the others in its runtime's directory as remote agents marked with their node
(``AgentRuntime.attach_remote(node=...)``), whose capabilities are ``RemoteTool``s calling
over NATS (:class:`~loom.cluster._calls.ClusterCalls`). So ``directory.by_capability``,
``least_busy``, ``call_tool`` and the bridge's listings span the cluster.

Ids are unique cluster-wide: the runtime asks :meth:`ClusterDirectory.claim` before it starts
or attaches an agent, which creates the agent's key (KV create: atomic, one winner) or takes
it over from a node that is dead or whose agent has ended; else ``AgentExists``.

Liveness: a node not heard from for 1.5 heartbeat intervals (checked every quarter interval,
while the bucket itself delivers: a probe, this node's heartbeat written at once, asks it) is
dead: its agents leave this node's directory, and calls waiting on it fail at once with
``AGENT_DISCONNECTED``. So a node killed with SIGKILL leaves every directory within two
intervals. The bucket's own age limit (three intervals) removes what a dead node left in it,
leaving a marker per key; a marker is no verdict (after a long election the new leader marks
every key, live nodes' too): a node is dead by its silence, and an agent whose key aged out
stays shown while its node lives, until its node writes the key again or evidently will not.
A node that stops cleanly deletes its keys first, so others see its agents leave at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from types import TracebackType

import anyio
import msgspec
import nats.js.errors
from anyio.abc import TaskGroup
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from loom.runtime import AgentExists, AgentRuntime

from ._available import AVAILABLE_WAIT_S, until_available
from ._calls import ClusterCalls
from ._directory_watch import DirectoryWatch
from ._directory_wire import (
    ENDED_STATUSES,
    AgentRecord,
    NodeRecord,
    ToolRecord,
    agent_key,
    node_key,
)
from ._errors import JetStreamUnavailable
from ._peers import Peers
from ._replicas import with_replicas

__all__ = ["ClusterDirectory", "DirectoryStats"]

log = logging.getLogger("loom.cluster")

BUCKET = "loom_directory"
_decode_agent = msgspec.json.Decoder(AgentRecord).decode
_encode = msgspec.json.Encoder().encode


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ClusterDirectory:
    """This node's share of the cluster's directory, and its view of the others'.

    An async context manager: entering creates (or opens) the bucket, starts serving calls,
    reads what the bucket holds, and sets ``runtime.id_claim``; leaving withdraws this node's
    agents from the bucket and its proxies from the runtime.

    Args:
        runtime: the node's runtime (its directory is the one shown and kept).
        client: the node's NATS connection (JetStream on).
        node: this node's name (one subject token).
        heartbeat_s: how often this node says it is alive; 1.5 times it without word is death.
        available_wait_s: how long entering waits for JetStream to serve the bucket (a NATS
            cluster electing its leaders) before it raises ``JetStreamUnavailable``.
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        client: Client,
        node: str,
        *,
        heartbeat_s: float = 2.0,
        available_wait_s: float = AVAILABLE_WAIT_S,
    ) -> None:
        self.runtime = runtime
        self.client = client
        self.node = node
        self.heartbeat_s = heartbeat_s
        self.available_wait_s = available_wait_s
        self.calls = ClusterCalls(runtime, client, node)
        self._kv: KeyValue | None = None
        self._tg: TaskGroup | None = None
        # This node's keys: agent id -> the revision last written (compare-and-set).
        self._owned: dict[str, int] = {}
        self._claimed: dict[str, float] = {}  # agent id -> when claimed (anyio time)
        self._published: dict[str, AgentRecord] = {}
        self.peers = Peers(runtime, node, self.calls, self._gave_way)
        # Keys of this node found in the bucket at start, not claimed again: what an earlier
        # run of this node (killed, restarted) left; removed once the bucket is read.
        self._leftovers: dict[str, int] = {}
        self._watch = DirectoryWatch(client, node, heartbeat_s, self._on_entry)
        # How long a write of this node's keys may wait for its answer before it is made
        # again (the client's own timeout, 5 s, outlasts a node's liveness window).
        self._write_timeout_s = heartbeat_s / 2

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ClusterDirectory:
        # A NATS cluster starting with this node (or missing servers) may not have elected
        # the bucket's leader yet: the node waits for it, bounded (_available.py).
        self._kv = await until_available(
            f"the directory's bucket {BUCKET}", self._open_bucket, wait_s=self.available_wait_s
        )
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._tg.start(self.calls.serve)
            # A write needs the bucket's stream to have a leader (opening it did not).
            await until_available(
                f"a write to the directory's bucket {BUCKET}",
                self._put_node,
                wait_s=self.available_wait_s,
            )
            self._tg.start_soon(self._watch.run, self._kv)
            bound = max(2 * self.heartbeat_s, self.available_wait_s)
            with anyio.move_on_after(bound):
                await self._watch.ready.wait()  # what the bucket held is in the directory
            if not self._watch.ready.is_set():
                raise JetStreamUnavailable(
                    f"a watch of the directory's bucket {BUCKET}", bound, "it delivered nothing"
                )
            await self._remove_leftovers()
            self._tg.start_soon(self._heartbeats)
            self._tg.start_soon(self._refresh)
            self._tg.start_soon(self._publish_changes)
            self._tg.start_soon(
                functools.partial(
                    self.peers.sweep,
                    self.heartbeat_s,
                    lambda: self._watch.heard,
                    self._probe,
                    directory_resumed=lambda: self._watch.resumed,
                    # A heartbeat lost in the bucket's silence is written again within this.
                    grace_s=self.heartbeat_s / 2,
                )
            )
        except BaseException:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            raise
        self.runtime.id_claim = self.claim
        return self

    async def _open_bucket(self) -> KeyValue:
        js = self.client.jetstream()
        try:
            return await js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:

            async def make(replicas: int) -> KeyValue:
                config = KeyValueConfig(
                    bucket=BUCKET,
                    history=1,
                    ttl=3 * self.heartbeat_s,
                    # An expired key leaves a marker, so the watchers learn it is gone (the
                    # leftovers of a node that died; nats-server 2.11+).
                    limit_marker_ttl=max(1.0, self.heartbeat_s),
                    # Three copies on a NATS cluster: the directory survives any one server.
                    replicas=replicas,
                )
                return await js.create_key_value(config)

            return await with_replicas(self.client, f"the directory's bucket {BUCKET}", make)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Leave: delete this node's keys, drop the others' agents. Idempotent."""
        tg, self._tg = self._tg, None
        if tg is None:
            return
        if self.runtime.id_claim == self.claim:
            self.runtime.id_claim = None
        tg.cancel_scope.cancel()
        await tg.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            kv = self._kv
            if kv is not None:
                with anyio.move_on_after(2.0):
                    for agent_id, revision in list(self._owned.items()):
                        with contextlib.suppress(Exception):
                            await kv.delete(agent_key(agent_id), last=revision)
                    with contextlib.suppress(Exception):
                        await kv.delete(node_key(self.node))
            for node in self.peers.nodes():
                await self.peers.drop_node(node, "this node is leaving", level=logging.DEBUG)

    # ------------------------------------------------------------------ claims

    async def claim(self, agent_id: str) -> None:
        """Make ``agent_id`` this node's (the runtime's ``id_claim``).

        Raises:
            AgentExists: it is live on another node.
        """
        kv = self._kv
        assert kv is not None
        key = agent_key(agent_id)
        value = _encode(self._placeholder(agent_id))
        for _ in range(3):
            self._claimed[agent_id] = anyio.current_time()
            try:
                self._owned[agent_id] = await kv.create(key, value)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                pass
            held, revision = await _held(kv, key)
            if revision is None:
                continue  # gone meanwhile: create again
            if held is not None:
                live = self.peers.alive(held.node) and held.status not in ENDED_STATUSES
                if held.node != self.node and live:
                    raise AgentExists(agent_id, f"it is live on node {held.node}")
            # Ours already, or of a dead node, or ended there, or lapsed: taken over.
            try:
                self._owned[agent_id] = await kv.update(key, value, last=revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise AgentExists(agent_id, "another node claimed it at the same time")

    def _placeholder(self, agent_id: str) -> AgentRecord:
        return AgentRecord(id=agent_id, node=self.node, status="starting", heartbeat_ms=_now_ms())

    # ------------------------------------------------------------------ this node's agents

    def _records(self) -> dict[str, AgentRecord]:
        """This node's own agents as records, now."""
        runtime = self.runtime
        out: dict[str, AgentRecord] = {}
        for info in runtime.directory.all():
            if info.node != self.node:
                continue
            tools = tuple(
                ToolRecord(
                    name=t.name,
                    description=t.description,
                    parameters_schema=_encode(t.parameters_schema).decode(),
                    validates_arguments=bool(getattr(t, "validates_arguments", False)),
                )
                for t in runtime.capabilities_of(info.id)
            )
            out[info.id] = AgentRecord(
                id=info.id,
                node=self.node,
                status=info.status.value,
                patterns=info.patterns,
                tools=tools,
                metadata=dict(info.metadata),
                restarts=info.restarts,
                load=max(0, info.mailbox_depth) + max(0, info.in_flight),
                heartbeat_ms=info.last_heartbeat_ms,
            )
        return out

    async def _publish(self, *, all_of_them: bool) -> None:
        kv = self._kv
        assert kv is not None
        records = self._records()
        for agent_id, record in records.items():
            before = self._published.get(agent_id)
            same = before is not None and _same(before, record)
            if same and not all_of_them:
                continue
            # Bounded like the heartbeat: a write lost on the way is abandoned and made again
            # by the next round (the compare-and-set finds out whether it landed after all).
            with anyio.fail_after(self._write_timeout_s):
                await self._write(kv, record)
            self._published[agent_id] = record
        # Gone from the directory: its key goes too (not one just claimed: its agent is
        # being started or attached, and enters the directory in a moment).
        recent = anyio.current_time() - 2 * self.heartbeat_s
        for agent_id in [
            a
            for a in {*self._published, *self._owned}
            if a not in records and self._claimed.get(a, 0.0) < recent
        ]:
            self._published.pop(agent_id, None)
            self._claimed.pop(agent_id, None)
            revision = self._owned.pop(agent_id, None)
            if revision is not None:
                # Not written (lost, or the key lapsed meanwhile): it ages out, and the other
                # nodes drop the agent once this node does not write it again.
                with (
                    contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError),
                    anyio.fail_after(self._write_timeout_s),
                ):
                    await kv.delete(agent_key(agent_id), last=revision)

    async def _write(self, kv: KeyValue, record: AgentRecord) -> None:
        """Write this node's record of an agent, compare-and-set against the last write."""
        agent_id = record.id
        key = agent_key(agent_id)
        data = _encode(record)
        try:
            if agent_id in self._owned:
                self._owned[agent_id] = await kv.update(key, data, last=self._owned[agent_id])
            else:
                self._owned[agent_id] = await kv.create(key, data)
            return
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        # Not as last written: the key lapsed (this node's writes did not reach the bucket
        # for longer than its age limit: cut off from NATS, an election) or another node
        # took the id over.
        held, revision = await _held(kv, key)
        if revision is None:
            self._owned[agent_id] = await kv.create(key, data)
            return
        live_there = (
            held is not None and self.peers.alive(held.node) and held.status not in ENDED_STATUSES
        )
        if (
            held is None
            or held.node == self.node
            or (not live_there and record.status not in ENDED_STATUSES)
        ):
            self._owned[agent_id] = await kv.update(key, data, last=revision)
            return
        if self._owned.pop(agent_id, None) is not None:
            log.info("cluster: agent %s is now node %s's", agent_id, held.node)

    async def _put_node(self) -> None:
        assert self._kv is not None
        record = NodeRecord(node=self.node, heartbeat_s=self.heartbeat_s, heartbeat_ms=_now_ms())
        await self._kv.put(node_key(self.node), _encode(record))

    async def _probe(self) -> None:
        """This node's heartbeat, written now: the sweep's question whether the directory
        still delivers (a failure is the answer "not now", so it is not logged as a missed
        heartbeat; the watch's own guard deals with a directory that stays silent)."""
        try:
            await self._put_node()
        except Exception as exc:
            log.debug("cluster: probe heartbeat of node %s not written: %s", self.node, exc)

    async def _heartbeats(self) -> None:
        """This node's key, every interval. Each write is bounded by a quarter interval and a
        failed one is made again a quarter interval later: a write lost on the way (the
        bucket's leader died with it) would otherwise hold this node silent for the client's
        whole timeout (5 s), and the others would find it dead. On its own task, so that
        writing this node's agents (:meth:`_refresh`) never delays it."""
        failing_since: float | None = None
        while True:
            try:
                with anyio.fail_after(self.heartbeat_s / 4):
                    await self._put_node()
            except Exception as exc:  # NATS away, a JetStream error, no answer in time
                if failing_since is None:
                    failing_since = anyio.current_time()
                    log.warning(
                        "cluster: heartbeat of node %s not written: %s; trying again",
                        self.node,
                        str(exc) or f"no answer in {self.heartbeat_s / 4:g} s",
                    )
                await anyio.sleep(self.heartbeat_s / 4)
                continue
            if failing_since is not None:
                log.info(
                    "cluster: heartbeat of node %s written again after %.1f s",
                    self.node,
                    anyio.current_time() - failing_since,
                )
                failing_since = None
            await anyio.sleep(self.heartbeat_s)

    async def _refresh(self) -> None:
        """Every key of this node's agents, written again every interval (the bucket's age
        limit removes a key nobody writes: what a dead node left)."""
        while True:
            try:
                await self._publish(all_of_them=True)
            except Exception as exc:  # the next round writes them
                log.warning(
                    "cluster: agents of node %s not written: %s",
                    self.node,
                    str(exc) or f"no answer in {self._write_timeout_s:g} s",
                )
            await anyio.sleep(self.heartbeat_s)

    async def _publish_changes(self) -> None:
        while True:
            await self.runtime.directory.wait_changed()
            try:
                await self._publish(all_of_them=False)
            except Exception as exc:  # the next heartbeat writes it
                log.warning("cluster: directory change of node %s not written: %s", self.node, exc)

    async def _remove_leftovers(self) -> None:
        assert self._kv is not None
        for agent_id, revision in self._leftovers.items():
            if agent_id not in self._owned:
                with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                    await self._kv.delete(agent_key(agent_id), last=revision)
        if self._leftovers:
            log.info(
                "cluster: %d agents of an earlier run of node %s removed",
                len(self._leftovers),
                self.node,
            )
        self._leftovers.clear()

    # ------------------------------------------------------------------ the other nodes

    async def _on_entry(self, entry: KeyValue.Entry) -> None:
        """One entry of the bucket, as the watch delivers it."""
        key = entry.key
        # DEL: a node deleted the key (it left; it removed an agent). PURGE: the server's
        # marker of a key nobody wrote for the bucket's age limit (this code never purges).
        # That is no verdict: a dead node is found by its silence (the sweep), and after an
        # election the new leader marks every key at once, live nodes' too.
        if key.startswith("nodes."):
            node = key.removeprefix("nodes.")
            if node == self.node:
                return
            if entry.operation == "DEL":
                await self.peers.drop_node(node, "it left", level=logging.INFO)
            elif entry.operation != "PURGE":
                self.peers.heard(node)
        elif key.startswith("agents."):
            if entry.operation == "DEL":
                await self.peers.removed(key)
            elif entry.operation == "PURGE":
                await self.peers.expired(key)
            else:
                await self._on_agent(key, entry.value or b"", entry.revision)

    async def _on_agent(self, key: str, value: bytes, revision: int | None) -> None:
        try:
            record = _decode_agent(value)
        except msgspec.DecodeError:
            log.warning("cluster: undecodable directory entry %s", key)
            return
        if record.node != self.node:
            await self.peers.update(record)
        elif not self._watch.ready.is_set() and revision is not None:
            self._leftovers[record.id] = revision

    def _gave_way(self, agent_id: str) -> None:
        self._published.pop(agent_id, None)
        self._owned.pop(agent_id, None)

    # ------------------------------------------------------------------ reads

    def nodes(self) -> list[str]:
        """The nodes heard from, this one first."""
        return [self.node, *self.peers.nodes()]

    def statistics(self) -> DirectoryStats:
        """What this node sees of the cluster now."""
        return DirectoryStats(
            node=self.node,
            nodes=len(self.peers.nodes()) + 1,
            agents_here=len(self._owned),
            agents_elsewhere=len(self.peers),
            calls_waiting=len(self.calls.pending),
            calls_serving=self.calls.serving(),
        )


class DirectoryStats(msgspec.Struct, frozen=True, kw_only=True):
    """A node's view of its cluster (``ClusterDirectory.statistics()``).

    Attributes:
        node: this node.
        nodes: the nodes alive, this one included.
        agents_here: this node's agents in the shared directory.
        agents_elsewhere: the other nodes' agents shown here.
        calls_waiting: calls of this node waiting on other nodes.
        calls_serving: calls of other nodes this node runs now.
    """

    node: str
    nodes: int
    agents_here: int
    agents_elsewhere: int
    calls_waiting: int
    calls_serving: int


async def _held(kv: KeyValue, key: str) -> tuple[AgentRecord | None, int | None]:
    """The record the bucket holds under ``key`` and the revision a write over it names
    (``None``: no key, create it). A key that aged out holds the server's marker (an empty
    message: nats-py's ``get`` does not tell it from a value), and an undecodable one holds
    nothing anybody can claim: both are written over."""
    try:
        entry = await kv.get(key)
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None, None
    try:
        return (_decode_agent(entry.value) if entry.value else None), entry.revision
    except msgspec.DecodeError:
        log.warning("cluster: undecodable directory entry %s written over", key)
        return None, entry.revision


def _same(a: AgentRecord, b: AgentRecord) -> bool:
    """Equal but for what changes every heartbeat (its time, the load)."""
    return msgspec.structs.replace(a, heartbeat_ms=0, load=0) == msgspec.structs.replace(
        b, heartbeat_ms=0, load=0
    )
