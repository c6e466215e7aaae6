"""Topic and pattern validation, and routing checked against an independent reference matcher."""

from __future__ import annotations

import re

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom.runtime import (
    Event,
    EventBus,
    InvalidArgument,
    InvalidTopic,
    QoS,
    WouldBlock,
    pattern_matches,
)
from loom.runtime.lowlevel import validate_pattern, validate_topic

# ---------------------------------------------------------------- validation


def test_a_valid_topic_splits_into_its_segments() -> None:
    assert validate_topic("orders.eu.created") == ["orders", "eu", "created"]
    assert validate_topic("a") == ["a"]
    assert validate_topic("ünïcode.-_:/#") == ["ünïcode", "-_:/#"]


def test_a_valid_pattern_splits_into_its_segments() -> None:
    assert validate_pattern("orders.*.created") == ["orders", "*", "created"]
    assert validate_pattern("orders.>") == ["orders", ">"]
    assert validate_pattern(">") == [">"]
    assert validate_pattern("*.*") == ["*", "*"]


BAD_ANYWHERE = [
    ("", "is empty"),
    ("a..b", "segment 2 is empty"),
    (".a", "segment 1 is empty"),
    ("a.", "segment 2 is empty"),
    ("a b", "whitespace or control"),
    ("a.\tb", "whitespace or control"),
    ("a\nb", "whitespace or control"),
    ("a\x00b", "whitespace or control"),
    ("a\x7fb", "whitespace or control"),
    ("x" * 1025, "longer than 1024"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_ANYWHERE)
def test_malformed_topics_and_patterns_are_refused_with_the_reason(text: str, reason: str) -> None:
    for check in (validate_topic, validate_pattern):
        with pytest.raises(InvalidTopic, match=reason) as info:
            check(text)
        assert reason in info.value.reason
        assert isinstance(info.value, InvalidArgument)
        assert isinstance(info.value, ValueError)


def test_a_topic_of_exactly_the_maximum_length_is_fine() -> None:
    assert validate_topic("x" * 1024) == ["x" * 1024]


@pytest.mark.parametrize("topic", ["a.*", "*", "a.>", ">", "a*", "a.b>c"])
def test_a_publish_topic_may_not_hold_wildcards(topic: str) -> None:
    with pytest.raises(InvalidTopic, match="wildcards are for subscriptions") as info:
        validate_topic(topic)
    assert info.value.topic == topic


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("a.>.b", "'>' must be the last segment"),
        (">.a", "'>' must be the last segment"),
        ("a*", "mixes a wildcard with text"),
        ("a.*b", "mixes a wildcard with text"),
        ("a.b>", "mixes a wildcard with text"),
        ("**", "mixes a wildcard with text"),
        (">>", "mixes a wildcard with text"),
    ],
)
def test_malformed_wildcards_are_refused(pattern: str, reason: str) -> None:
    with pytest.raises(InvalidTopic, match=re.escape(reason)) as info:
        validate_pattern(pattern)
    assert info.value.reason.startswith(reason) or reason in info.value.reason


@pytest.mark.parametrize("value", [None, 3, b"a.b", ["a"]])
def test_a_topic_must_be_a_str(value: object) -> None:
    with pytest.raises(InvalidTopic, match="must be a str"):
        validate_topic(value)  # type: ignore[arg-type]
    with pytest.raises(InvalidTopic, match="must be a str"):
        validate_pattern(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("orders.*.created", "orders.eu.created", True),
        ("orders.*.created", "orders.created", False),
        ("orders.*.created", "orders.eu.x.created", False),
        ("orders.>", "orders.eu", True),
        ("orders.>", "orders.eu.created", True),
        ("orders.>", "orders", False),
        (">", "a", True),
        ("*", "a.b", False),
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        ("a.b.c", "a.b", False),
    ],
)
def test_pattern_matches(pattern: str, topic: str, expected: bool) -> None:
    assert pattern_matches(pattern, topic) is expected


# ---------------------------------------------------------------- routing property


def reference_matches(pattern: str, topic: str) -> bool:
    """NATS subject matching, written independently of the bus: a pattern becomes a regex."""
    pieces = []
    for segment in pattern.split("."):
        if segment == "*":
            pieces.append(r"[^.]+")
        elif segment == ">":
            pieces.append(r"[^.]+(?:\.[^.]+)*")
        else:
            pieces.append(re.escape(segment))
    return re.fullmatch(r"\.".join(pieces), topic) is not None


# A small alphabet, so that random patterns and topics actually match each other.
segment = st.sampled_from(["a", "b", "c"])
topics = st.lists(segment, min_size=1, max_size=4).map(".".join)
patterns = st.builds(
    lambda parts, tail: ".".join(parts + ([">"] if tail else [])),
    st.lists(st.one_of(segment, st.just("*")), min_size=0, max_size=4),
    st.booleans(),
).filter(bool)


@settings(max_examples=300, deadline=None)
@given(pattern=patterns, topic=topics)
def test_pattern_matches_agrees_with_the_reference(pattern: str, topic: str) -> None:
    validate_pattern(pattern)
    assert pattern_matches(pattern, topic) is reference_matches(pattern, topic)


@settings(max_examples=150, deadline=None)
@given(
    subscribed=st.lists(patterns, min_size=1, max_size=10),
    published=st.lists(topics, min_size=1, max_size=12),
    closing=st.data(),
)
def test_the_bus_routes_as_the_reference_says(
    subscribed: list[str], published: list[str], closing: st.DataObject
) -> None:
    """Every subscription gets exactly the topics the reference matcher says, in order; after
    closing some (duplicates and shared prefixes included), the rest still do, and the trie
    shrinks back to its root when all are gone."""
    to_close = closing.draw(st.sets(st.sampled_from(range(len(subscribed)))))

    async def main() -> None:
        async with EventBus() as bus:
            subs = [bus.subscribe(p, qos=QoS.REALTIME, buffer_size=64) for p in subscribed]
            for round_ in range(2):
                for topic in published:
                    bus.publish_nowait(topic, Event(type=topic))
                for pattern, sub in zip(subscribed, subs, strict=True):
                    if sub.closed:
                        continue
                    got = []
                    while True:
                        try:
                            got.append(sub.receive_nowait().topic)
                        except WouldBlock:
                            break
                    assert got == [t for t in published if reference_matches(pattern, t)], (
                        pattern,
                        round_,
                    )
                for i in to_close:
                    subs[i].close()
            still_open = [p for i, p in enumerate(subscribed) if i not in to_close]
            unrouted = sum(
                not any(reference_matches(p, t) for p in open_patterns)
                for open_patterns in (subscribed, still_open)
                for t in published
            )
            stats = bus.statistics()
            assert (stats.published, stats.unrouted) == (2 * len(published), unrouted)
            for sub in subs:
                sub.close()
            assert bus.trie_node_count() == 1
            assert bus.statistics().subscriptions == ()

    anyio.run(main)
