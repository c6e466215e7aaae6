"""The other nodes of a cluster as one node sees them: which are alive, and their agents
shown in this node's runtime as remote agents marked with their node.

Fed by :class:`~loom.cluster.ClusterDirectory`'s watch of the shared bucket: a node's
heartbeat (:meth:`Peers.heard`), an agent's record (:meth:`Peers.update`), a removed key
(:meth:`Peers.removed`). An agent of another node becomes a proxy
(``AgentRuntime.attach_remote(node=...)``): its patterns, status, restarts and load as its
node wrote them, and a ``RemoteTool`` per capability that calls that node
(:meth:`ClusterCalls.invoker`). A node silent for 1.5 heartbeat intervals is dead
(:meth:`Peers.sweep`): its proxies leave, and the calls waiting on it fail
(:meth:`ClusterCalls.fail_node`). An agent's key that aged out in the bucket (nobody wrote it
for three intervals: :meth:`Peers.expired`) is not proof of anything while its node lives:
the bucket's replicas electing a leader withhold every write, and the new leader then marks
every key at once. Its node writes it again at its next heartbeat; only a key it does not
write again is the agent gone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec

from loom.runtime import AgentRuntime, AgentStatus, LoomError
from loom.runtime.lowlevel import RemoteAgent, RemoteTool

from ._calls import ClusterCalls
from ._directory_wire import ENDED_STATUSES, AgentRecord, agent_key

__all__ = ["Peers"]

log = logging.getLogger("loom.cluster")

_json = msgspec.json.Decoder().decode
_STATUSES = frozenset(s.value for s in AgentStatus)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Peers:
    """The other nodes, and their agents in ``runtime``'s directory.

    Args:
        runtime: this node's runtime.
        node: this node's name.
        calls: this node's calls to others (the proxies' tools call through it).
        gave_way: ``gave_way(agent_id)``: this node's own entry of that id, which had ended,
            was removed for another node's live agent (the id moved there).
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        node: str,
        calls: ClusterCalls,
        gave_way: Callable[[str], None],
    ) -> None:
        self.runtime = runtime
        self.node = node
        self.calls = calls
        self._gave_way = gave_way
        self._seen: dict[str, float] = {}  # node -> when last heard from (anyio time)
        # agent id -> (its node, its proxy here, its record as last applied)
        self._proxies: dict[str, tuple[str, RemoteAgent, AgentRecord]] = {}
        # agent id -> when its key aged out in the bucket (anyio time), until its node
        # writes it again (its proxy stays meanwhile) or the sweep finds it will not.
        self._lapsed: dict[str, float] = {}

    def heard(self, node: str) -> None:
        """``node`` said it is alive (its heartbeat)."""
        self._seen[node] = anyio.current_time()

    def alive(self, node: str) -> bool:
        """Whether ``node`` is another node heard from within the liveness window."""
        return node in self._seen

    async def removed(self, key: str) -> None:
        """The agent key ``key`` was deleted (its node removed the agent)."""
        agent_id = self._agent_of(key)
        if agent_id is not None:
            await self._drop_proxy(agent_id, "its node removed it")

    async def expired(self, key: str) -> None:
        """The agent key ``key`` aged out: nobody wrote it for the bucket's age limit. Its
        agent stays while its node lives, until the sweep finds the node did not write it
        again (:meth:`sweep`); an agent of a node not alive leaves now."""
        agent_id = self._agent_of(key)
        if agent_id is None:
            return
        if self.alive(self._proxies[agent_id][0]):
            self._lapsed.setdefault(agent_id, anyio.current_time())
        else:
            await self._drop_proxy(agent_id, "its key expired")

    def _agent_of(self, key: str) -> str | None:
        return next((a for a in self._proxies if agent_key(a) == key), None)

    async def update(self, record: AgentRecord) -> None:
        """Another node wrote its record of an agent: show it here, or bring it up to date."""
        self._seen.setdefault(record.node, anyio.current_time())
        self._lapsed.pop(record.id, None)
        held = self._proxies.get(record.id)
        if held is not None and held[0] != record.node:
            await self._drop_proxy(record.id, f"it moved to node {record.node}")
            held = None
        elif held is not None and (held[1].detached or record.id not in self.runtime.directory):
            # Taken off this node's directory by hand (``loom agents release``): shown anew.
            self._proxies.pop(record.id, None)
            held = None
        if held is None:
            if not await self._make_room(record):
                return
            try:
                remote = await self.runtime.attach_remote(
                    record.id, metadata=record.metadata, node=record.node
                )
            except LoomError as exc:  # a local agent of that id, or the runtime is closing
                log.warning(
                    "cluster: agent %s of node %s not shown: %s", record.id, record.node, exc
                )
                return
            # Events for it travel to its node (the cluster's transport), not into a
            # mailbox here: the proxy keeps none.
            remote.mailbox.close()
            held = (record.node, remote, record)
            self._proxies[record.id] = held
            self._apply(remote, record, None)
        else:
            self._apply(held[1], record, held[2])
        self._proxies[record.id] = (record.node, held[1], record)

    async def _make_room(self, record: AgentRecord) -> bool:
        """Whether ``record``'s agent may be shown here: a local entry of that id that has
        ended (the id moved to another node) gives way; a live one keeps it."""
        directory = self.runtime.directory
        known = directory.get(record.id)
        if known is None:
            return True
        if known.node == self.node and known.status.value in ENDED_STATUSES:
            directory.remove(record.id)
            self._gave_way(record.id)
            return True
        if record.status not in ENDED_STATUSES:
            log.error(
                "cluster: agent %s is live on node %s and here: ids must be unique",
                record.id,
                record.node,
            )
        return False

    def _apply(self, remote: RemoteAgent, record: AgentRecord, before: AgentRecord | None) -> None:
        directory = self.runtime.directory
        if record.id not in directory:
            return
        if (
            before is not None
            and before.tools
            and not record.tools
            and record.status == "disconnected"
        ):
            # Ended or disconnected there: what it offered may come back (a reconnect), so
            # calls here wait for it as they would on its own node.
            directory.withdraw_capabilities(record.id)
        if before is None or before.tools != record.tools:
            invoke = self.calls.invoker(record.node, record.id)
            remote.declare_tools(
                RemoteTool(
                    t.name,
                    t.description,
                    _json(t.parameters_schema),
                    invoke,
                    validates_arguments=True,  # its own node's registry checks them
                )
                for t in record.tools
            )
        if before is None or before.patterns != record.patterns:
            for pattern in before.patterns if before is not None else ():
                if pattern not in record.patterns:
                    directory.remove_pattern(record.id, pattern)
            for pattern in record.patterns:
                directory.add_pattern(record.id, pattern)
        status = AgentStatus(record.status) if record.status in _STATUSES else AgentStatus.RUNNING
        info = directory.get(record.id)
        if info is not None and info.status is not status:
            directory.set_status(record.id, status)
        while (info := directory.get(record.id)) is not None and info.restarts < record.restarts:
            directory.count_restart(record.id)
        load = record.load
        directory.set_depth_probe(record.id, lambda: load)
        directory.heartbeat(record.id, now_ms=_now_ms())

    async def _drop_proxy(self, agent_id: str, reason: str) -> None:
        self._lapsed.pop(agent_id, None)
        held = self._proxies.pop(agent_id, None)
        if held is None:
            return
        await held[1].detach(reason)
        directory = self.runtime.directory
        info = directory.get(agent_id)
        if info is not None and info.node == held[0]:
            directory.remove(agent_id)
            directory.forget_capabilities(agent_id)

    async def drop_node(self, node: str, reason: str, *, level: int = logging.WARNING) -> None:
        """``node`` is gone: its agents leave this directory, the calls waiting on it fail."""
        self._seen.pop(node, None)
        failed = self.calls.fail_node(node, reason)
        gone = [a for a, held in self._proxies.items() if held[0] == node]
        for agent_id in gone:
            await self._drop_proxy(agent_id, f"node {node}: {reason}")
        if gone or failed:
            log.log(
                level,
                "cluster: node %s is gone (%s): %d agents left, %d calls failed",
                node,
                reason,
                len(gone),
                failed,
            )

    async def sweep(
        self,
        heartbeat_s: float,
        directory_heard: Callable[[], float],
        probe: Callable[[], Awaitable[None]],
        *,
        directory_resumed: Callable[[], float] = lambda: 0.0,
        grace_s: float = 0.0,
    ) -> None:
        """Declare dead, every quarter interval, the nodes silent for 1.5 intervals, while
        the directory itself speaks.

        ``directory_heard`` says when the watch of the bucket last delivered anything (this
        node's own heartbeat comes through it every interval). A node is dead only once the
        directory went on speaking for 1.25 intervals after that node's last word: a live
        node would have written within them (a quarter interval of slack for a late
        write). When the directory falls silent too, the silence is the directory's, not
        the other nodes': the bucket's replicas electing a leader after a NATS server died,
        a stalled watch. Nobody is declared dead then (as nobody is while disconnected); the
        watch comes back and brings the heartbeats.

        ``directory_resumed`` says when the bucket last began storing writes again after a
        silence of its own. A live node may have lost its write in it and still be waiting
        for its answer (``grace_s``, its heartbeat write's timeout), so the 1.25 intervals
        of speech count from ``grace_s`` after the silence ended: the first write stored
        after an election is not proof that everybody else died in it.

        A node silent for 1.5 intervals before the directory spoke after it is not left to
        wait for this node's next heartbeat (up to an interval later: its agents would leave
        2.5 intervals after its last word, not 2): ``probe()`` writes this node's heartbeat
        at once, and its delivery, a quarter interval later, is the directory speaking.

        An agent whose key aged out (:meth:`expired`) leaves once the directory went on
        speaking for two intervals after that (or after the silence's grace) without its
        node writing it again: its node rewrites every key of its own every interval."""
        limit = 1.5 * heartbeat_s
        while True:
            await anyio.sleep(heartbeat_s / 4)
            now = anyio.current_time()
            heard = directory_heard()
            settled = directory_resumed() + grace_s  # speech counts from here at the earliest
            unproven = False
            for node, seen in list(self._seen.items()):
                if now - seen > limit:
                    if heard - max(seen, settled) > 1.25 * heartbeat_s:
                        await self.drop_node(node, f"silent for {limit:g} s")
                    elif now > settled:
                        unproven = True
            for agent_id, lapsed in list(self._lapsed.items()):
                if heard - max(lapsed, settled) > 2 * heartbeat_s:
                    node = self._proxies[agent_id][0]
                    await self._drop_proxy(agent_id, f"node {node} no longer writes it")
                    log.info("cluster: agent %s of node %s left: its key expired", agent_id, node)
            if unproven:
                with anyio.move_on_after(heartbeat_s / 4):
                    await probe()

    def nodes(self) -> list[str]:
        """The other nodes heard from, sorted."""
        return sorted(self._seen)

    def __len__(self) -> int:
        """How many agents of other nodes are shown here."""
        return len(self._proxies)
