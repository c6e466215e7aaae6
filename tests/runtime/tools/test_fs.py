"""fs.read / fs.write / fs.list: confinement to the workspace, caps, binary safety."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from loom.runtime import InvalidArgument
from loom.runtime.tools import (
    DirListing,
    FileContent,
    FileWritten,
    FsList,
    FsRead,
    FsWrite,
    InvalidToolArguments,
    ToolFailed,
    ToolPermissionDenied,
    ToolRegistry,
    Workspace,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_text("hello\n")
    (root / "sub" / "inner.txt").write_text("inner")
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.txt").write_text("outside")
    return root


@pytest.fixture
def registry(root: Path) -> ToolRegistry:
    workspace = Workspace(root)
    registry = ToolRegistry()
    registry.register(FsRead(workspace, max_bytes=64))
    registry.register(FsWrite(workspace, max_bytes=32))
    registry.register(FsList(workspace, max_entries=3))
    return registry


async def test_read_text(registry: ToolRegistry) -> None:
    got = await registry.call("fs.read", {"path": "hello.txt"})
    assert got == FileContent(
        path="hello.txt",
        size=6,
        offset=0,
        bytes_read=6,
        encoding="utf-8",
        content="hello\n",
        truncated=False,
    )
    got = await registry.call("fs.read", {"path": "./sub//inner.txt", "offset": 2})
    assert (got.content, got.truncated) == ("ner", False)


async def test_read_binary_is_base64(root: Path, registry: ToolRegistry) -> None:
    blob = bytes(range(255, 215, -1))
    (root / "blob.bin").write_bytes(blob)
    got = await registry.call("fs.read", {"path": "blob.bin"})
    assert got.encoding == "base64"
    assert base64.b64decode(got.content) == blob


async def test_read_is_capped_and_pages_without_cutting_characters(
    root: Path, registry: ToolRegistry
) -> None:
    text = "a" * 63 + "é" + "tail"  # 'é' is two bytes: the cap at 64 falls inside it
    (root / "long.txt").write_text(text)
    first = await registry.call("fs.read", {"path": "long.txt"})
    assert (first.content, first.bytes_read, first.truncated) == ("a" * 63, 63, True)
    second = await registry.call("fs.read", {"path": "long.txt", "offset": first.bytes_read})
    assert (second.content, second.truncated) == ("étail", False)
    small = await registry.call("fs.read", {"path": "long.txt", "max_bytes": 4})
    assert (small.content, small.truncated) == ("aaaa", True)
    with pytest.raises(InvalidToolArguments):
        await registry.call("fs.read", {"path": "long.txt", "max_bytes": 65})


@pytest.mark.parametrize(
    "path",
    [
        "../secret.txt",
        "sub/../../secret.txt",
        "sub/../hello.txt",  # stays inside, but '..' is refused outright
        "/etc/passwd",
        "~/x",
        "out_link.txt",
        "out_dir/x.txt",
        "hello.txt/x",
    ],
)
async def test_read_escapes_are_refused(root: Path, registry: ToolRegistry, path: str) -> None:
    (root / "out_link.txt").symlink_to(root.parent / "secret.txt")
    (root / "out_dir").symlink_to(root.parent / "outside", target_is_directory=True)
    with pytest.raises(ToolPermissionDenied) as info:
        await registry.call("fs.read", {"path": path})
    assert str(root) not in str(info.value)


@pytest.mark.parametrize(
    "path", ["../evil.txt", "/tmp/evil.txt", "out_dir/evil.txt", "out_link.txt", "hello.txt/x"]
)
async def test_write_escapes_are_refused(root: Path, registry: ToolRegistry, path: str) -> None:
    (root / "out_link.txt").symlink_to(root.parent / "secret.txt")
    (root / "out_dir").symlink_to(root.parent / "outside", target_is_directory=True)
    with pytest.raises(ToolPermissionDenied):
        await registry.call("fs.write", {"path": path, "content": "pwned"})
    assert (root.parent / "secret.txt").read_text() == "secret"
    assert not (root.parent / "outside" / "evil.txt").exists()
    assert not (root.parent / "evil.txt").exists()


async def test_list_escapes_are_refused(root: Path, registry: ToolRegistry) -> None:
    (root / "out_dir").symlink_to(root.parent / "outside", target_is_directory=True)
    for path in ("..", "/", "out_dir", "sub/../.."):
        with pytest.raises(ToolPermissionDenied):
            await registry.call("fs.list", {"path": path})


async def test_symlinks_inside_the_root_are_followed_when_listing_paths(
    root: Path, registry: ToolRegistry
) -> None:
    (root / "alias").symlink_to(root / "sub", target_is_directory=True)
    (root / "alias.txt").symlink_to(root / "hello.txt")
    got = await registry.call("fs.read", {"path": "alias/inner.txt"})
    assert got.content == "inner"
    got = await registry.call("fs.read", {"path": "alias.txt"})
    assert got.content == "hello\n"
    # Writing through a symlink inside the root writes its target.
    await registry.call("fs.write", {"path": "alias.txt", "content": "x"})
    assert (root / "hello.txt").read_text() == "x"
    assert (root / "alias.txt").is_symlink()


async def test_hard_linked_files_are_not_written(root: Path, registry: ToolRegistry) -> None:
    os.link(root.parent / "secret.txt", root / "linked.txt")
    with pytest.raises(ToolPermissionDenied, match="hard links"):
        await registry.call("fs.write", {"path": "linked.txt", "content": "pwned"})
    assert (root.parent / "secret.txt").read_text() == "secret"


async def test_fifo_is_refused_without_hanging(root: Path, registry: ToolRegistry) -> None:
    os.mkfifo(root / "pipe")
    with pytest.raises(ToolPermissionDenied, match="not a regular file"):
        await registry.call("fs.read", {"path": "pipe"}, timeout=5)


async def test_write_modes(root: Path, registry: ToolRegistry) -> None:
    got = await registry.call("fs.write", {"path": "new.txt", "content": "one"})
    assert got == FileWritten(path="new.txt", bytes_written=3, size=3)
    await registry.call("fs.write", {"path": "new.txt", "content": "+two", "mode": "append"})
    assert (root / "new.txt").read_text() == "one+two"
    await registry.call("fs.write", {"path": "new.txt", "content": "3"})
    assert (root / "new.txt").read_text() == "3"
    with pytest.raises(ToolFailed) as info:
        await registry.call("fs.write", {"path": "new.txt", "content": "x", "mode": "create"})
    assert info.value.cause_type == "FileExistsError"
    blob = base64.b64encode(b"\x00\xff").decode()
    await registry.call("fs.write", {"path": "b.bin", "content": blob, "encoding": "base64"})
    assert (root / "b.bin").read_bytes() == b"\x00\xff"
    with pytest.raises(InvalidToolArguments, match="base64"):
        await registry.call("fs.write", {"path": "b.bin", "content": "%%", "encoding": "base64"})


async def test_write_parents(root: Path, registry: ToolRegistry) -> None:
    with pytest.raises(ToolFailed) as info:
        await registry.call("fs.write", {"path": "a/b/c.txt", "content": "x"})
    assert info.value.cause_type == "FileNotFoundError"
    await registry.call("fs.write", {"path": "a/b/c.txt", "content": "x", "create_parents": True})
    assert (root / "a" / "b" / "c.txt").read_text() == "x"


async def test_write_size_cap(root: Path, registry: ToolRegistry) -> None:
    with pytest.raises(InvalidToolArguments) as info:
        await registry.call("fs.write", {"path": "big.txt", "content": "x" * 33})
    assert info.value.path == ("content",)
    assert not (root / "big.txt").exists()
    await registry.call("fs.write", {"path": "big.txt", "content": "x" * 32})


async def test_list(root: Path, registry: ToolRegistry) -> None:
    (root / "link").symlink_to(root / "hello.txt")
    got = await registry.call("fs.list", {})
    assert isinstance(got, DirListing)
    assert [(e.name, e.type, e.size) for e in got.entries] == [
        ("hello.txt", "file", 6),
        ("link", "symlink", None),
        ("sub", "directory", None),
    ]
    assert not got.truncated
    (root / "zzz").write_text("")
    got = await registry.call("fs.list", {"path": "."})
    assert got.truncated
    assert len(got.entries) == 3
    got = await registry.call("fs.list", {"path": "sub"})
    assert [e.name for e in got.entries] == ["inner.txt"]


async def test_missing_and_directory_errors(registry: ToolRegistry) -> None:
    with pytest.raises(ToolFailed) as info:
        await registry.call("fs.read", {"path": "nope.txt"})
    assert info.value.cause_type == "FileNotFoundError"
    with pytest.raises(ToolFailed) as info:
        await registry.call("fs.read", {"path": "sub"})
    assert info.value.cause_type == "IsADirectoryError"
    with pytest.raises(ToolFailed) as info:
        await registry.call("fs.list", {"path": "hello.txt"})
    assert info.value.cause_type == "NotADirectoryError"
    with pytest.raises(InvalidToolArguments):
        await registry.call("fs.read", {"path": "a\0b"})


def test_workspace_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        Workspace(tmp_path / "missing")
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    assert Workspace(link).root == tmp_path.resolve()


def test_a_directory_swapped_for_a_symlink_after_the_check_is_refused(root: Path) -> None:
    workspace = Workspace(root)
    parts = workspace.components("sub/inner.txt")
    assert parts == ["sub", "inner.txt"]
    # The race: between the check and the open, 'sub' becomes a symlink to outside.
    (root / "sub").rename(root / "sub.old")
    (root / "sub").symlink_to(root.parent / "outside", target_is_directory=True)
    with pytest.raises(ToolPermissionDenied, match="symbolic link"):  # noqa: SIM117
        with workspace.directory(parts[:-1], "sub/inner.txt"):
            pass


async def test_hard_linked_files_are_not_read(root: Path, registry: ToolRegistry) -> None:
    # A hard link is the file itself, not a pointer: no path check sees where else it lives.
    os.link(root.parent / "secret.txt", root / "linked.txt")
    with pytest.raises(ToolPermissionDenied, match="hard links") as info:
        await registry.call("fs.read", {"path": "linked.txt"})
    assert "secret" not in str(info.value).replace("secret.txt", "")
    # Both names inside the workspace: refused all the same (the rule cannot tell them apart).
    os.link(root / "hello.txt", root / "sub" / "again.txt")
    with pytest.raises(ToolPermissionDenied, match="hard links"):
        await registry.call("fs.read", {"path": "hello.txt"})
    os.unlink(root / "sub" / "again.txt")
    got = await registry.call("fs.read", {"path": "hello.txt"})
    assert got.content == "hello\n"
