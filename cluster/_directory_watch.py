"""The watch of the directory's bucket: one node following every write to it, for as long as
the node runs, and watching again when the watch stalls.

:class:`ClusterDirectory <loom.cluster._directory.ClusterDirectory>` hands each entry the
watch delivers to its own callback (what a key means is the directory's business); this
module only keeps the watch alive and says when it last delivered anything.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import anyio
from nats.aio.client import Client
from nats.js.kv import KeyValue

__all__ = ["DirectoryWatch"]

log = logging.getLogger("loom.cluster")


class DirectoryWatch:
    """Follows the bucket and passes each entry on to ``on_entry``.

    Args:
        client: the node's NATS connection (its state tells a stall from a disconnection).
        node: this node's name (for the log lines).
        heartbeat_s: the cluster's heartbeat interval; a healthy watch delivers at least
            this node's own heartbeat that often.
        on_entry: called with each entry, in order, one at a time.

    Attributes:
        ready: set once the bucket's contents, as the first watch found them, were passed on.
        heard: when the watch last delivered news (anyio time: an entry not passed on
            before, and not the server's marker of a key that aged out), for the liveness of
            the other nodes (nobody is declared dead while the directory itself is silent,
            and neither a replay nor an expiry marker is speech).
        resumed: when the bucket was last heard storing writes again after it had stored
            none for 1.5 intervals (anyio time; 0: never): the end of a silence of the
            bucket itself (its replicas electing a leader), told by the store times of the
            writes, so that this process's own stalls do not count. A live node may have lost
            a write in the silence: the others give it a moment before they judge it.
    """

    def __init__(
        self,
        client: Client,
        node: str,
        heartbeat_s: float,
        on_entry: Callable[[KeyValue.Entry], Awaitable[None]],
    ) -> None:
        self.client = client
        self.node = node
        self.heartbeat_s = heartbeat_s
        self._on_entry = on_entry
        self.ready = anyio.Event()
        self.heard = 0.0
        self.resumed = 0.0
        self._stored: float | None = None  # the store time of the latest news (Unix s)
        # When the watch last delivered an entry (anyio time), reset when a watch starts:
        # for the watch's own liveness.
        self._seen = 0.0
        # Each key's revision as last passed on. A watch made again replays what the bucket
        # holds: entries passed on before are no news, so they are not passed on again (the
        # last heartbeat of a node killed a moment ago is no sign of life; the records of a
        # node declared dead would bring its agents back), and they do not count as the
        # directory speaking (``heard``): a replay during an election, taken as speech while
        # the other nodes' heartbeats were withheld, declared every live node dead.
        self._revisions: dict[str, int] = {}

    async def run(self, kv: KeyValue) -> None:
        """Follow the bucket for as long as the node runs, watching again when the watch
        stalls.

        A watch is a JetStream consumer on one server of the NATS cluster: when that server
        dies, its deliveries stop, and nats-py's own recovery (a missed idle heartbeat, 10 s
        on) gives up for good when the consumer cannot be made again at that moment (the
        replicas are still electing a leader). This node's own key is rewritten every
        heartbeat, so a healthy watch delivers something at least that often: three
        intervals without anything while connected mean a stalled watch, and a new one
        replays the bucket (what is current; the writes it missed arrive as their next
        heartbeat)."""
        while True:
            self._seen = anyio.current_time()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._guard, tg.cancel_scope)
                try:
                    await self._watch_once(kv)
                except Exception as exc:  # the watch could not be made, or broke
                    log.warning("cluster: directory watch of node %s failed: %s", self.node, exc)
                    await anyio.sleep(self.heartbeat_s)
                tg.cancel_scope.cancel()

    async def _guard(self, watch: anyio.CancelScope) -> None:
        await self._stalled()
        log.warning(
            "cluster: node %s heard nothing from the directory for %.1f s; watching it again",
            self.node,
            anyio.current_time() - self._seen,
        )
        watch.cancel()

    async def _stalled(self) -> None:
        """Return once the watch has delivered nothing for three heartbeat intervals while
        the connection was up and this process ran (a disconnection is a state of its own:
        the client resubscribes when it is back)."""
        last = anyio.current_time()
        while True:
            await anyio.sleep(self.heartbeat_s)
            now = anyio.current_time()
            # Time this process did not run (a starved event loop) is not the watch's
            # silence: what it delivered meanwhile waits unread. Counted as silence, a stall
            # of three intervals made the watch again for nothing (and the new one's replay
            # of the bucket cost a round of every key).
            stalled = now - last - self.heartbeat_s
            last = now
            if stalled > self.heartbeat_s / 4:
                self._seen = min(now, self._seen + stalled)
            if not self.client.is_connected:
                self._seen = now
            elif now - self._seen > 3 * self.heartbeat_s:
                return

    async def _deliver(self, entry: KeyValue.Entry | None) -> None:
        """One delivery of the watch (``None``: the bucket's contents as it found them are
        all delivered): passed on if it is news."""
        now = anyio.current_time()
        self._seen = now  # the watch is alive, replaying or not
        if entry is None:
            self.ready.set()  # the bucket's contents are read
            return
        if entry.operation in ("DEL", "PURGE"):
            self._revisions.pop(entry.key, None)
        elif entry.revision is not None:
            if self._revisions.get(entry.key) == entry.revision:
                return  # passed on before: a watch made again replays it
            self._revisions[entry.key] = entry.revision
        if entry.operation != "PURGE":
            # PURGE is the server's marker of a key nobody wrote for its age limit (this
            # code never purges): word of a silence, not speech. After the bucket's replicas
            # elected a leader, the new one marks every key at once.
            self._spoke(now, entry.created)
        await self._on_entry(entry)

    def _spoke(self, now: float, created: object) -> None:
        # nats-py hands the store time as a datetime (its annotation says int).
        stored = created.timestamp() if isinstance(created, datetime) else None
        if stored is not None:
            if self._stored is not None and stored - self._stored > 1.5 * self.heartbeat_s:
                self.resumed = now  # the bucket stored nothing for a while: a silence ended
            if self._stored is None or stored > self._stored:
                self._stored = stored
        self.heard = now

    async def _watch_once(self, kv: KeyValue) -> None:
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                await self._deliver(entry)
        finally:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(2.0),
                contextlib.suppress(Exception),
            ):
                await watcher.stop()  # type: ignore[no-untyped-call]
