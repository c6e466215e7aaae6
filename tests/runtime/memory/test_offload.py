"""Large tool outputs go to files; the context keeps a preview that names the file."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from loom.runtime import InvalidArgument
from loom.runtime.llm import ToolCall
from loom.runtime.memory import AgentContext, InMemoryStore, Offloader
from loom.runtime.memory._offload import safe_name

pytestmark = pytest.mark.anyio


async def test_large_tool_result_is_offloaded_with_head_and_tail(tmp_path: Path) -> None:
    offloader = Offloader.in_data_dir(tmp_path, threshold_bytes=1000, head_chars=100, tail_chars=50)
    output = "HEAD" + "x" * 5000 + "ü" * 100 + "TAIL"
    async with InMemoryStore() as store:
        ctx = AgentContext(store, agent_id="agent/1", thread_id="t", offloader=offloader)
        await ctx.record_assistant(tool_calls=[ToolCall(id="c1", name="shell.exec")])
        item = await ctx.record_tool_result("c1", output, tool_name="shell.exec")
        path = Path(item.metadata["offload_path"])
        assert path == tmp_path / "offload" / "agent%2F1" / f"{safe_name(item.id)}.txt"
        assert await anyio.Path(path).read_text(encoding="utf-8") == output
        assert item.metadata["offload_bytes"] == str(len(output.encode()))
        assert item.content.startswith("HEAD" + "x" * 96)
        assert item.content.endswith("ü" * 46 + "TAIL")
        assert str(path) in item.content
        assert f"{len(output) - 150} characters omitted" in item.content
        assert len(item.content) < 400
        # The prompt carries the preview, not the output.
        messages = await ctx.build(budget_tokens=2000)
        assert messages[-1].content == item.content
        # What was stored is the preview too.
        assert (await store.get(item.id)) == item


async def test_small_results_and_other_kinds_stay_inline(tmp_path: Path) -> None:
    offloader = Offloader(tmp_path / "off", threshold_bytes=100, head_chars=10, tail_chars=10)
    async with InMemoryStore() as store:
        ctx = AgentContext(store, agent_id="a", thread_id="t", offloader=offloader)
        small = await ctx.record_tool_result("c1", "y" * 100, tool_name="x")
        assert small.content == "y" * 100
        assert "offload_path" not in small.metadata
        said = await ctx.record_user("z" * 1000)
        assert said.content == "z" * 1000
    assert not (tmp_path / "off").exists()


async def test_threshold_is_in_bytes_not_characters(tmp_path: Path) -> None:
    offloader = Offloader(tmp_path, threshold_bytes=100, head_chars=10, tail_chars=10)
    assert await offloader.offload("a", "i1", "é" * 50) is None  # exactly 100 bytes
    done = await offloader.offload("a", "i2", "é" * 51)  # 102 bytes, 51 characters
    assert done is not None
    assert done.size == 102


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        Offloader(tmp_path, threshold_bytes=0)
    with pytest.raises(InvalidArgument):
        Offloader(tmp_path, head_chars=-1)
    with pytest.raises(InvalidArgument):
        Offloader(tmp_path, threshold_bytes=100, head_chars=60, tail_chars=40)


def test_safe_names_cannot_escape_the_directory() -> None:
    for name in ["..", ".", "", "a/b", "a\\b", "/etc/passwd", "ü", "%41"]:
        safe = safe_name(name)
        assert safe not in (".", "..", "")
        assert "/" not in safe
        assert "\\" not in safe
        assert "." not in safe
    assert safe_name("agent-1_x") == "agent-1_x"
    assert safe_name("%41") != safe_name("A")  # '%' itself is escaped: no collisions
