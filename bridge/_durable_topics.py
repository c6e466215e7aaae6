"""Which topics the server stores durably, as a bridge client knows them.

With ``STREAM_FEATURE_DURABLE_TOPICS`` the server lists, in its welcome, the durable patterns
its bus stores for (a publish on a topic one of them matches is stored in JetStream before it
is routed and acknowledged), and sends the ones it learns later (``ServerEvent.
durable_patterns``). The client's publish asks :meth:`DurableTopics.matches` for each topic:
a durable one waits for its ``publish_ack`` (which follows the store), every other stays
pipelined. So the check must cost next to nothing when nothing is durable, and little
otherwise: a flag first, then a bounded cache of answers per topic, cleared when the patterns
grow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from loom.runtime import InvalidArgument
from loom.runtime.lowlevel import TopicTrie, validate_pattern

__all__ = ["DurableTopics"]

_MAX_CACHED: Final = 4096  # topics whose answer is kept; the cache starts over beyond it


class DurableTopics:
    """The durable patterns of the connected server (empty: none, or an older server)."""

    __slots__ = ("_cache", "_patterns", "_trie")

    def __init__(self) -> None:
        self._patterns: set[str] = set()
        self._trie: TopicTrie[str] = TopicTrie()
        self._cache: dict[str, bool] = {}

    def reset(self, patterns: Iterable[str]) -> None:
        """A new stream's welcome: its patterns replace the last stream's (a server that
        restarted, or another one, may store other topics)."""
        self._patterns = set()
        self._trie = TopicTrie()
        self.add(patterns)
        self._cache = {}

    def add(self, patterns: Iterable[str]) -> None:
        """More patterns the server learnt (a ``durable_patterns`` frame)."""
        for pattern in patterns:
            if pattern in self._patterns:
                continue
            try:
                parts = validate_pattern(pattern)
            except InvalidArgument:
                continue  # not a pattern we can match: a newer server's, ignored
            self._patterns.add(pattern)
            self._trie.insert(parts, pattern)
        self._cache = {}

    def patterns(self) -> frozenset[str]:
        return frozenset(self._patterns)

    def matches(self, topic: str) -> bool:
        """Whether the server stores a publish on ``topic`` durably (as far as it told us)."""
        if not self._patterns:
            return False
        cache = self._cache
        hit = cache.get(topic)
        if hit is None:
            if len(cache) >= _MAX_CACHED:
                cache.clear()
            hit = cache[topic] = bool(self._trie.match(topic.split(".")))
        return hit
