"""shell.exec's file confinement: option allow-lists per program, the real-path jail on
every file argument, symlinks and hard links leading outside (issue 17, item 3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loom.runtime.tools import (
    ExecResult,
    FsWrite,
    ShellExec,
    ToolPermissionDenied,
    ToolRegistry,
    Workspace,
    _workspace,
)

pytestmark = pytest.mark.anyio

SECRET = "TOP-SECRET-4711"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("b\na\nc\na\n")
    (root / "b.txt").write_text("a\nb\n")
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.txt").write_text(SECRET + "\n")
    return root


def make(root: Path, **kwargs: object) -> ToolRegistry:
    workspace = Workspace(root)
    registry = ToolRegistry()
    registry.register(ShellExec(workspace, **kwargs))  # type: ignore[arg-type]
    registry.register(FsWrite(workspace))
    return registry


async def run(registry: ToolRegistry, *argv: str, **more: object) -> ExecResult:
    result = await registry.call("shell.exec", {"argv": list(argv), **more})
    assert isinstance(result, ExecResult)
    return result


async def refused(registry: ToolRegistry, *argv: str, match: str | None = None) -> str:
    with pytest.raises(ToolPermissionDenied, match=match) as info:
        await run(registry, *argv)
    assert SECRET not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize(
    "argv",
    [
        ["sort", "--files0-from=list"],
        ["sort", "--files0-from", "list"],
        ["wc", "--files0-from=list"],
        ["wc", "-l", "--files0-from", "list"],
    ],
)
async def test_file_names_read_from_a_file_are_refused(root: Path, argv: list[str]) -> None:
    # The probe's escape: a list of host paths written with fs.write, then read by name.
    registry = make(root)
    await registry.call(
        "fs.write", {"path": "list", "content": str(root.parent / "secret.txt") + "\0"}
    )
    message = await refused(registry, *argv, match="--files0-from")
    assert "file names from a file" in message


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["sort", "-T", "sub", "a.txt"], "-T"),
        (["sort", "-Tsub", "a.txt"], "-T"),
        (["sort", "--temporary-directory=sub", "a.txt"], "--temporary-directory"),
        (["sort", "--compress-program=sh", "a.txt"], "--compress-program"),
        (["sort", "-rT", "sub", "a.txt"], "-T"),
        (["grep", "-R", "a", "."], "-R"),
        (["grep", "--dereference-recursive", "a", "."], "--dereference-recursive"),
        (["ls", "-lL", "."], "-L"),
        (["ls", "--dereference", "."], "--dereference"),
        (["diff", "-l", "a.txt", "b.txt"], "-l"),
        (["find", "-L", "."], "-L"),
        (["find", ".", "-follow"], "-follow"),
        (["find", ".", "-xtype", "f"], "-xtype"),
        (["find", ".", "-fprint", "out"], "-fprint"),
        (["find", ".", "-name", "x", "-o", "-exec", "cat", "{}", ";"], "-exec"),
        (["find", ".", "-files0-from", "list"], "-files0-from"),
        (["tail", "--pid=1", "a.txt"], "--pid"),
        (["head", "-5c", "a.txt"], "-5c"),
        (["tail", "-F", "a.txt"], "-F"),
        (["tail", "--follow=name", "a.txt"], "--follow=name"),
        (["sort", "--bogus", "a.txt"], "--bogus"),
        (["cat", "-Z", "a.txt"], "-Z"),
        (["find", ".", "-bogus"], "-bogus"),
    ],
)
async def test_options_off_the_allow_list_are_refused_by_name(
    root: Path, argv: list[str], option: str
) -> None:
    message = await refused(make(root), *argv)
    assert f"{argv[0]} {option}: refused, " in message


async def test_long_options_must_be_spelled_in_full(root: Path) -> None:
    # getopt would take '--out' for '--output' (or for an option the table does not know).
    message = await refused(make(root), "sort", "--out=x", "a.txt", match="in full")
    assert "--out" in message


@pytest.fixture
def links(root: Path) -> Path:
    (root / "out.txt").symlink_to(root.parent / "secret.txt")
    (root / "out_dir").symlink_to(root.parent / "outside", target_is_directory=True)
    (root / "dangling").symlink_to(root.parent / "new-outside.txt")
    os.link(root.parent / "secret.txt", root / "hard.txt")
    return root


@pytest.mark.parametrize(
    "argv",
    [
        ["cat", "out.txt"],
        ["cat", "--", "-n", "out.txt"],
        ["grep", "x", "a.txt", "-n", "out.txt"],  # options and operands mix, as getopt allows
        ["cat", "-n", "a.txt", "out_dir/x.txt"],
        ["head", "-n", "1", "hard.txt"],
        ["tail", "hard.txt"],
        ["grep", "-e", "x", "out.txt"],
        ["grep", "x", "hard.txt"],
        ["grep", "-f", "hard.txt", "a.txt"],
        ["sort", "--random-source=hard.txt", "-R", "a.txt"],
        ["wc", "hard.txt"],
        ["uniq", "out.txt"],
        ["diff", "a.txt", "out.txt"],
        ["diff", "--from-file=hard.txt", "a.txt"],
        ["diff", "-X", "out.txt", "a.txt", "b.txt"],
        ["ls", "out_dir"],
        ["find", "out_dir"],
        ["find", ".", "-newer", "out.txt"],
    ],
)
async def test_reads_through_links_leading_outside_are_refused(
    links: Path, argv: list[str]
) -> None:
    await refused(make(links), *argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["sort", "-o", "out.txt", "a.txt"],
        ["sort", "--output=dangling", "a.txt"],
        ["sort", "-oout_dir/new.txt", "a.txt"],
        ["sort", "a.txt", "-o", "hard.txt"],
        ["uniq", "a.txt", "out.txt"],
        ["uniq", "a.txt", "dangling"],
        ["uniq", "-c", "a.txt", "hard.txt"],
    ],
)
async def test_writes_through_links_leading_outside_are_refused(
    links: Path, argv: list[str]
) -> None:
    await refused(make(links), *argv)
    assert (links.parent / "secret.txt").read_text() == SECRET + "\n"
    assert not (links.parent / "new-outside.txt").exists()
    assert not (links.parent / "outside" / "new.txt").exists()


async def test_trees_read_recursively_are_checked_first(root: Path) -> None:
    registry = make(root)
    (root / "d1" / "deep").mkdir(parents=True)
    (root / "d2" / "deep").mkdir(parents=True)
    (root / "d1" / "deep" / "f.txt").write_text("one\n")
    (root / "d2" / "deep" / "f.txt").write_text("two\n")
    # Clean trees read fine.
    got = await run(registry, "grep", "-rn", "one", ".")
    assert got.stdout == "./d1/deep/f.txt:1:one\n"
    got = await run(registry, "diff", "-r", "d1", "d2")
    assert got.exit_code == 1
    assert "one" in got.stdout
    # A hard link deep inside: grep -r and diff would read it.
    os.link(root.parent / "secret.txt", root / "d1" / "deep" / "h.txt")
    message = await refused(registry, "grep", "-r", "x", match="hard links")
    assert "'./d1/deep/h.txt'" in message
    await refused(registry, "grep", "--directories=recurse", "x", "d1", match="hard links")
    await refused(registry, "diff", "-r", "d1", "d2", match="hard links")
    os.unlink(root / "d1" / "deep" / "h.txt")
    # A symlink leading out: diff follows it, grep -r does not.
    (root / "d1" / "deep" / "s.txt").symlink_to(root.parent / "secret.txt")
    await refused(registry, "diff", "-r", "d1", "d2", match="leaves the workspace")
    got = await run(registry, "grep", "-r", "TOP", "d1")
    assert (got.exit_code, got.stdout) == (1, "")
    os.unlink(root / "d1" / "deep" / "s.txt")
    # A symlink to a directory inside: diff would walk a tree not checked, so it is refused.
    (root / "d1" / "loop").symlink_to(root / "d1", target_is_directory=True)
    await refused(registry, "diff", "d1", "d2", match="symbolic link to a directory")


async def test_tree_walks_are_bounded(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_workspace, "MAX_TREE_ENTRIES", 5)
    for i in range(6):
        (root / "sub" / f"{i}.txt").write_text("x\n")
    await refused(make(root), "grep", "-r", "x", "sub", match="more than 5 entries")


async def test_programs_without_rules_get_their_arguments_jailed(links: Path) -> None:
    registry = make(links, allow=["sha256sum", "cat"])
    await refused(registry, "sha256sum", "out.txt", match="leaves the workspace")
    await refused(registry, "sha256sum", "hard.txt", match="hard links")
    await refused(registry, "sha256sum", "@/etc/passwd", match="outside the workspace")
    await refused(registry, "sha256sum", "--check=out.txt", match="leaves the workspace")
    got = await run(registry, "sha256sum", "a.txt")
    assert got.exit_code == 0


async def test_everyday_uses_still_work(root: Path) -> None:
    registry = make(root)
    (root / "alias.txt").symlink_to(root / "a.txt")  # a symlink that stays inside is fine
    cases: list[tuple[list[str], str]] = [
        (["sort", "-n", "-o", "sorted.txt", "a.txt"], ""),
        (["cat", "sorted.txt"], "a\na\nb\nc\n"),
        (["sort", "-u", "alias.txt"], "a\nb\nc\n"),
        (["sort", "-t", "/", "-k", "1,1", "--", "a.txt"], "a\na\nb\nc\n"),
        (["uniq", "-c", "b.txt", "counted.txt"], ""),
        (["head", "-n", "1", "a.txt"], "b\n"),
        (["head", "-2", "a.txt"], "b\na\n"),
        (["tail", "-n1", "a.txt"], "a\n"),
        (["wc", "-l", "a.txt", "b.txt"], "4 a.txt\n 2 b.txt\n 6 total\n"),
        (["grep", "-c", "-e", "a", "-e", "c", "a.txt"], "3\n"),
        (["grep", "--fixed-strings", "/", "a.txt"], ""),
        (["cat", "-n", "-"], "     1\tin\n"),
        (["echo", "--files0-from=/etc/passwd", "-o", "/x"], "--files0-from=/etc/passwd -o /x\n"),
        (["find", ".", "-name", "*.txt", "-newer", "a.txt", "-type", "f", "-print"], ""),
        (["ls", "-la", "--color=never", "sub"], "total"),
    ]
    for argv, expected in cases:
        got = await run(registry, *argv, stdin="in\n")
        assert got.exit_code in (0, 1), (argv, got)
        assert got.stdout.lstrip().startswith(expected.lstrip()), (argv, got)
    assert (root / "counted.txt").read_text().split() == ["1", "a", "1", "b"]
    got = await run(registry, "diff", "-u", "a.txt", "b.txt")
    assert got.stdout.startswith("--- a.txt")
    got = await run(registry, "find", "sub", "-newermt", "2000-01-01")
    assert got.stdout == "sub\n"
