"""Helpers shared by the collaboration tests."""

from __future__ import annotations

from loom.runtime import EventBus, _replies

__all__ = ["idle"]


def idle(bus: EventBus) -> tuple[int, int]:
    """Subscriptions and trie nodes, not counting the reply router: once a bus has served a
    request it keeps that one subscription (on two patterns, six trie nodes) for all calls."""
    subs, nodes = bus.subscription_count(), bus.trie_node_count()
    router = _replies._routers.get(bus)
    if router is not None and not router._sub.closed:
        return subs - 1, nodes - 6
    return subs, nodes
