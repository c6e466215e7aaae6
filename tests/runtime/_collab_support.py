"""Helpers shared by the collaboration tests."""

from __future__ import annotations

import anyio

from loom import Agent, Context
from loom.runtime import Event, EventBus
from loom.runtime.collab import FirstK, _replies

__all__ = ["Orchestration", "idle"]


def idle(bus: EventBus) -> tuple[int, int]:
    """Subscriptions and trie nodes, not counting the reply router: once a bus has served a
    request it keeps that one subscription (on two patterns, six trie nodes) for all calls."""
    subs, nodes = bus.subscription_count(), bus.trie_node_count()
    router = bus.plumbing.reply_router
    if isinstance(router, _replies.ReplyRouter) and not router._sub.closed:
        return subs - 1, nodes - 6
    return subs, nodes


class Orchestration:
    """Workers that answer requests and bid on calls for proposals (score: the length of their
    name), and an orchestrator that gathers from them and runs a contract-net. The same
    scenario runs in process and through the bridge, so both must give the same results."""

    def __init__(self) -> None:
        self.results: dict[str, object] = {}
        self.done = anyio.Event()
        self.decided = anyio.Event()

    def _note(self, key: str, value: object) -> None:
        self.results[key] = value
        if sum(k.startswith("outcome.") for k in self.results) == 3:
            self.decided.set()

    def worker(self, name: str) -> Agent:
        async def on_event(ctx: Context, topic: str, event: Event) -> None:
            if event.type == "contract.cfp":
                outcome = await ctx.collab.propose(event, score=len(name), timeout=5)
                self._note(f"outcome.{name}", outcome.awarded)
            else:
                await ctx.reply(event, f"{name}:{event.payload.decode()}".encode())

        return Agent(name, topics=[f"work.{name}", "work.all", "bids"], on_event=on_event)

    def boss(self) -> Agent:
        results = self.results

        async def orchestrate(ctx: Context, topic: str, event: Event) -> None:
            thread = event.envelope.thread_id
            got = await ctx.collab.gather(["work.a", "work.bb", "work.ccc"], b"job", timeout=5)
            results["all"] = sorted(r.event.payload for r in got.replies)
            results["threads"] = {r.event.envelope.thread_id for r in got.replies}
            first = await ctx.collab.gather("work.all", b"q", timeout=5, mode=FirstK(1), expected=3)
            results["first"] = first.satisfied and len(first.replies) == 1
            won = await ctx.collab.contract_net("bids", b"task", window=5, expected=3)
            results["winner"] = [p.sender for p in won.awarded]
            results["thread"] = thread
            self.done.set()

        return Agent("boss", topics=["go"], on_event=orchestrate)

    async def finished(self) -> None:
        with anyio.fail_after(10):
            await self.done.wait()
            await self.decided.wait()
