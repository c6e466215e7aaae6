"""The tool-name mapping: valid, bijective, deterministic, order-independent."""

from __future__ import annotations

import random
import re

from hypothesis import given
from hypothesis import strategies as st

from loom.runtime.llm import ToolNameMap

WIRE = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Dotted names, names that sanitise to the same thing, long names, unicode, near-duplicates.
names = st.one_of(
    st.text(alphabet="ab._-/ é", min_size=1, max_size=8),
    st.text(min_size=1, max_size=90),
    st.from_regex(r"[a-z]{1,3}(\.[a-z]{1,3}){0,2}", fullmatch=True),
)


@given(st.sets(names, max_size=25))
def test_mapping_is_a_valid_bijection(tool_names: set[str]) -> None:
    mapping = ToolNameMap(tool_names)
    wire = {name: mapping.to_wire(name) for name in tool_names}
    assert all(WIRE.fullmatch(w) for w in wire.values())
    assert len(set(wire.values())) == len(tool_names)
    for name, w in wire.items():
        assert mapping.from_wire(w) == name


@given(st.lists(names, max_size=15, unique=True), st.randoms())
def test_mapping_ignores_order(tool_names: list[str], rnd: random.Random) -> None:
    shuffled = list(tool_names)
    rnd.shuffle(shuffled)
    a, b = ToolNameMap(tool_names), ToolNameMap(shuffled)
    assert all(a.to_wire(n) == b.to_wire(n) for n in tool_names)


def test_readable_names_stay_readable() -> None:
    mapping = ToolNameMap(["fs.read", "github.create_issue", "already_fine", "a-b"])
    assert mapping.to_wire("fs.read") == "fs_read"
    assert mapping.to_wire("github.create_issue") == "github_create_issue"
    assert mapping.to_wire("already_fine") == "already_fine"
    assert mapping.to_wire("a-b") == "a-b"


def test_collisions_get_hashes_and_valid_names_keep_theirs() -> None:
    mapping = ToolNameMap(["fs.read", "fs_read", "fs/read"])
    assert mapping.to_wire("fs_read") == "fs_read"
    hashed = {mapping.to_wire("fs.read"), mapping.to_wire("fs/read")}
    assert len(hashed) == 2
    assert all(re.fullmatch(r"fs_read_[0-9a-f]{8}", w) for w in hashed)


def test_long_names_are_cut_with_a_hash() -> None:
    long_a = "x." + "a" * 80
    long_b = "x." + "a" * 79 + "b"
    mapping = ToolNameMap([long_a, long_b])
    wa, wb = mapping.to_wire(long_a), mapping.to_wire(long_b)
    assert len(wa) == len(wb) == 64
    assert wa != wb
    assert mapping.from_wire(wa) == long_a


def test_unknown_wire_name_is_none() -> None:
    assert ToolNameMap(["fs.read"]).from_wire("fs_write") is None
