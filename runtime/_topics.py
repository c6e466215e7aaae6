"""Topics, patterns and the subscription trie.

Topics are dot-separated segments (``orders.eu.created``). A subscription pattern may use two
wildcards, with the semantics of NATS subjects so a NATS backend maps them one to one:

* ``*`` matches exactly one segment: ``orders.*.created`` matches ``orders.eu.created``;
* ``>`` matches one or more trailing segments and must be last: ``orders.>`` matches
  ``orders.eu`` and ``orders.eu.created`` but not ``orders``.

A wildcard is a whole segment or nothing: ``ord*`` is refused rather than read literally.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ._errors import InvalidTopic

__all__ = ["TopicTrie", "pattern_matches", "validate_pattern", "validate_topic"]

_MAX_LEN = 1024
_FORBIDDEN = frozenset(" \t\r\n\v\f\x00")

T = TypeVar("T")


def _segments(text: str) -> list[str]:
    if not isinstance(text, str):
        raise InvalidTopic(repr(text), f"must be a str, not {type(text).__name__}")
    if not text:
        raise InvalidTopic(text, "is empty")
    if len(text) > _MAX_LEN:
        raise InvalidTopic(text[:64] + "...", f"is longer than {_MAX_LEN} characters")
    if not _FORBIDDEN.isdisjoint(text) or not text.isprintable():
        raise InvalidTopic(text, "contains whitespace or control characters")
    parts = text.split(".")
    for i, part in enumerate(parts):
        if not part:
            raise InvalidTopic(text, f"segment {i + 1} is empty")
    return parts


def validate_topic(topic: str) -> list[str]:
    """Check a concrete (publish) topic and return its segments.

    Raises:
        InvalidTopic: with the reason.
    """
    parts = _segments(topic)
    for part in parts:
        if "*" in part or ">" in part:
            raise InvalidTopic(topic, "wildcards are for subscriptions, not for publishing")
    return parts


def validate_pattern(pattern: str) -> list[str]:
    """Check a subscription pattern and return its segments.

    Raises:
        InvalidTopic: with the reason.
    """
    parts = _segments(pattern)
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if part == ">":
            if i != last:
                raise InvalidTopic(pattern, "'>' must be the last segment")
        elif part != "*" and ("*" in part or ">" in part):
            raise InvalidTopic(pattern, f"segment {part!r} mixes a wildcard with text")
    return parts


def pattern_matches(pattern: str, topic: str) -> bool:
    """Whether ``pattern`` matches the concrete ``topic`` (both assumed valid)."""
    p = pattern.split(".")
    t = topic.split(".")
    for i, seg in enumerate(p):
        if seg == ">":
            return len(t) > i
        if i >= len(t) or (seg != "*" and seg != t[i]):
            return False
    return len(p) == len(t)


class _Node(Generic[T]):
    # Containers are made on first use: most nodes of a big trie are leaves holding one
    # value, and a million empty dicts and lists would be most of the trie's memory.
    __slots__ = ("children", "star", "tail", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] | None = None
        self.star: _Node[T] | None = None
        self.tail: list[T] | None = None  # values whose pattern ends with '>' right here
        self.values: list[T] | None = None  # values whose pattern ends exactly here

    def empty(self) -> bool:
        return not (self.children or self.star or self.tail or self.values)


class TopicTrie(Generic[T]):
    """Maps patterns to values and finds every value whose pattern matches a topic.

    A match walks one path per wildcard branch that actually exists, so its cost depends on
    the topic's length and on the patterns that share its prefixes, never on how many
    unrelated patterns are stored. Removing the last value of a node prunes the node.
    """

    __slots__ = ("_root", "_size")

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def insert(self, parts: list[str], value: T) -> None:
        """Add ``value`` under a pattern already split by :func:`validate_pattern`."""
        node = self._root
        for i, part in enumerate(parts):
            if part == ">" and i == len(parts) - 1:
                if node.tail is None:
                    node.tail = []
                node.tail.append(value)
                self._size += 1
                return
            if part == "*":
                if node.star is None:
                    node.star = _Node()
                node = node.star
            else:
                if node.children is None:
                    node.children = {}
                child = node.children.get(part)
                if child is None:
                    child = node.children[part] = _Node()
                node = child
        if node.values is None:
            node.values = []
        node.values.append(value)
        self._size += 1

    def remove(self, parts: list[str], value: T) -> bool:
        """Remove ``value`` from its pattern; prune nodes left empty. False if absent."""
        path: list[tuple[_Node[T], str]] = []
        node = self._root
        last = len(parts) - 1
        bucket: list[T] | None = None
        for i, part in enumerate(parts):
            if part == ">" and i == last:
                bucket = node.tail
                break
            if part == "*":
                nxt = node.star
            else:
                nxt = None if node.children is None else node.children.get(part)
            if nxt is None:
                return False
            path.append((node, part))
            node = nxt
        if bucket is None:
            bucket = node.values
        if bucket is None:
            return False
        try:
            bucket.remove(value)
        except ValueError:
            return False
        self._size -= 1
        while path and node.empty():
            parent, part = path.pop()
            if part == "*":
                parent.star = None
            elif parent.children is not None:
                del parent.children[part]
            node = parent
        return True

    def match(self, parts: list[str]) -> list[T]:
        """Every value whose pattern matches the concrete topic ``parts``."""
        out: list[T] = []
        self._walk(self._root, parts, 0, out)
        return out

    def _walk(self, node: _Node[T], parts: list[str], i: int, out: list[T]) -> None:
        if i == len(parts):
            if node.values:
                out.extend(node.values)
            return
        if node.tail:
            out.extend(node.tail)
        if node.children is not None:
            child = node.children.get(parts[i])
            if child is not None:
                self._walk(child, parts, i + 1, out)
        if node.star is not None:
            self._walk(node.star, parts, i + 1, out)

    def node_count(self) -> int:
        """Nodes in the trie, the root included (for leak checks)."""
        count = 0
        stack = [self._root]
        while stack:
            node = stack.pop()
            count += 1
            if node.children:
                stack.extend(node.children.values())
            if node.star is not None:
                stack.append(node.star)
        return count
