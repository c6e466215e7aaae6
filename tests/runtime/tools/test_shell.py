"""shell.exec: allowlist, no shell, confinement, timeouts that kill, output cap, rlimits."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from loom.runtime import InvalidArgument
from loom.runtime.tools import (
    DEFAULT_SHELL_PROGRAMS,
    ExecResult,
    InvalidToolArguments,
    ResourceLimits,
    ShellExec,
    ToolFailed,
    ToolPermissionDenied,
    ToolRegistry,
    ToolTimeout,
    Workspace,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("b\na\nc\na\n")
    (tmp_path / "secret.txt").write_text("secret")
    return root


def make(root: Path, **kwargs: object) -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(ShellExec(Workspace(root), **kwargs))  # type: ignore[arg-type]
    return registry


async def run(registry: ToolRegistry, *argv: str, **more: object) -> ExecResult:
    result = await registry.call("shell.exec", {"argv": list(argv), **more})
    assert isinstance(result, ExecResult)
    return result


async def test_runs_allowed_programs_in_the_workspace(root: Path) -> None:
    registry = make(root)
    got = await run(registry, "sort", "a.txt")
    assert (got.exit_code, got.stdout, got.stderr, got.signal) == (0, "a\na\nb\nc\n", "", None)
    got = await run(registry, "ls", cwd="sub")
    assert got.stdout == ""
    got = await run(registry, "uniq", "-c", stdin="x\nx\ny\n")
    assert got.stdout.split() == ["2", "x", "1", "y"]
    got = await run(registry, "cat", "missing")
    assert got.exit_code == 1
    assert "No such file" in got.stderr


async def test_no_shell_interpretation(root: Path) -> None:
    registry = make(root)
    for arg in ("a; cat /x", "$(id)", "`id`", "*.txt", "a && b", "$HOME", "x | y"):
        got = await run(registry, "echo", arg)
        assert got.stdout == arg + "\n"
    got = await run(registry, "ls", "*.txt")
    assert got.exit_code != 0  # the glob is a literal name that does not exist


async def test_the_environment_is_clean(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_TEST_SECRET", "hunter2")
    # /proc/self is the reading process: cat shows its own environment.
    got = await run(make(root, confine_arguments=False), "cat", "/proc/self/environ")
    variables = dict(item.split("=", 1) for item in got.stdout.split("\0") if item)
    tmp = variables.pop("TMPDIR")
    assert variables == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LC_ALL": "C.UTF-8",
        "HOME": str(root),
    }
    # Each call's private temporary directory is gone when the call returns.
    assert Path(tmp).name.startswith("loom-shell-")
    assert not await anyio.Path(tmp).exists()


@pytest.mark.parametrize("program", ["python", "python3", "sh", "bash", "curl", "/usr/bin/ls"])
async def test_disallowed_programs_are_refused(root: Path, program: str) -> None:
    registry = make(root)
    with pytest.raises(ToolPermissionDenied, match="not allowed"):
        await run(registry, program, "-c", "print(1)")


@pytest.mark.parametrize(
    "argv",
    [
        ["cat", "/etc/passwd"],
        ["cat", "../secret.txt"],
        ["cat", "sub/../../secret.txt"],
        ["grep", "-r", "x", "/"],
        ["grep", "--file=/etc/passwd", "a.txt"],
        ["grep", "-f/etc/passwd", "a.txt"],
        ["ls", "~"],
        ["find", ".", "-exec", "cat", "{}", ";"],
        ["find", ".", "-delete"],
        ["sort", "--compress-program=sh", "a.txt"],
        ["sort", "--compress-prog=sh", "a.txt"],
    ],
)
async def test_arguments_leaving_the_workspace_are_refused(root: Path, argv: list[str]) -> None:
    registry = make(root)
    with pytest.raises(ToolPermissionDenied):
        await run(registry, *argv)


async def test_cwd_escapes_are_refused(root: Path) -> None:
    (root / "out").symlink_to(root.parent, target_is_directory=True)
    registry = make(root)
    for cwd in ("..", "/", "/tmp", "out", "a.txt/x"):
        with pytest.raises(ToolPermissionDenied):
            await run(registry, "ls", cwd=cwd)
    with pytest.raises(ToolFailed):
        await run(registry, "ls", cwd="a.txt")


async def test_timeout_kills_fast(root: Path) -> None:
    registry = make(root, allow=["sleep"])
    start = anyio.current_time()
    with pytest.raises(ToolTimeout) as info:
        await run(registry, "sleep", "30", timeout=0.2)
    assert info.value.timeout == 0.2
    assert anyio.current_time() - start < 3


async def assert_gone(marker: str) -> None:
    # SIGKILL is delivered asynchronously: give the kernel a moment to tear them down.
    with anyio.fail_after(5):
        while _processes_with(marker):
            await anyio.lowlevel.checkpoint()


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path("/proc", pid, "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline.split(b"\0"):
                found.append(int(pid))
    return found


async def test_timeout_and_cancellation_kill_the_whole_process_group(root: Path) -> None:
    # xargs forks sleep: the grandchild must die with the group.
    registry = make(root, allow=["xargs", "sleep"])
    marker = "31.4159"
    with pytest.raises(ToolTimeout):
        await run(registry, "xargs", "sleep", stdin=marker, timeout=0.5)
    await assert_gone(marker)

    marker = "31.2718"
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run(registry, "xargs", "sleep", stdin=marker))
        with anyio.fail_after(5):
            while not _processes_with(marker):
                await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    await assert_gone(marker)


async def test_the_registry_timeout_kills_too(root: Path) -> None:
    registry = ToolRegistry()
    registry.register(ShellExec(Workspace(root), allow=["sleep"]), timeout=0.2)
    marker = "32.5"
    with pytest.raises(ToolTimeout):
        await run(registry, "sleep", marker)
    await assert_gone(marker)


def unique(tag: str) -> str:
    # A sleep argument no other test run on this machine uses: the pid of this one.
    return f"41.{os.getpid()}{tag}"


async def test_background_children_end_with_the_call(root: Path) -> None:
    # The probe's case: 'cmd &' children used to survive the call, and holding stdout open
    # they kept it waiting until its timeout. Now the call returns when sh exits, having
    # killed and reaped them: none is left, not even as a zombie.
    registry = make(root, allow=["sh"])
    marker = unique("1")
    script = f"i=0; while [ $i -lt 50 ]; do sleep {marker} & i=$((i+1)); done; echo started"
    start = anyio.current_time()
    got = await run(registry, "sh", "-c", script, timeout=20)
    assert anyio.current_time() - start < 5
    assert (got.exit_code, got.stdout) == (0, "started\n")
    assert _processes_with(marker) == []
    got = await run(registry, "sh", "-c", "exit 3")
    assert (got.exit_code, got.signal) == (3, None)
    got = await run(registry, "sh", "-c", "kill -TERM $$")
    assert (got.exit_code, got.signal) == (-15, "SIGTERM")


async def test_children_that_left_the_session_end_with_the_call(root: Path) -> None:
    # setsid (and a double fork) takes a child out of the process group and the session, so
    # a group kill misses it; it used to turn a quick command into a timeout.
    registry = make(root, allow=["sh"])
    one, two = unique("1"), unique("2")
    script = f"echo a; setsid sleep {one} & (setsid sleep {two} &); echo b"
    start = anyio.current_time()
    got = await run(registry, "sh", "-c", script, timeout=20)
    assert anyio.current_time() - start < 5
    assert got.stdout == "a\nb\n"
    assert _processes_with(one) == _processes_with(two) == []


async def test_timeout_and_cancellation_kill_children_that_left_the_session(root: Path) -> None:
    registry = make(root, allow=["sh"])
    one, two = unique("1"), unique("2")
    start = anyio.current_time()
    with pytest.raises(ToolTimeout):
        await run(registry, "sh", "-c", f"setsid sleep {one} & exec sleep {two}", timeout=0.5)
    assert anyio.current_time() - start < 4
    assert _processes_with(one) == _processes_with(two) == []

    async with anyio.create_task_group() as tg:
        one, two = unique("3"), unique("4")
        script = f"setsid sleep {one} & exec sleep {two}"
        tg.start_soon(lambda: run(registry, "sh", "-c", script))
        with anyio.fail_after(5):
            while not (_processes_with(one) and _processes_with(two)):
                await anyio.lowlevel.checkpoint()
        tg.cancel_scope.cancel()
    assert _processes_with(one) == _processes_with(two) == []


async def test_output_cap(root: Path) -> None:
    (root / "big.txt").write_text("x" * 10_000)
    registry = make(root, max_output_bytes=100)
    got = await run(registry, "cat", "big.txt")
    assert got.stdout_truncated
    assert got.stdout.startswith("x" * 100 + "\n[... 9900 more bytes not shown]")
    assert got.exit_code == 0  # drained to the end: the program finished normally
    got = await run(registry, "cat", "a.txt")
    assert not got.stdout_truncated


async def test_file_size_limit_applies(root: Path) -> None:
    (root / "in.txt").write_text("".join(f"{i:09d}\n" for i in range(1000)))  # 10 kB
    registry = make(root, limits=ResourceLimits(file_size=1000))
    got = await run(registry, "sort", "-o", "out.txt", "in.txt")
    assert got.signal == "SIGXFSZ"
    assert (root / "out.txt").stat().st_size <= 1000
    # Without the limit the same call succeeds.
    got = await run(make(root), "sort", "-o", "out.txt", "in.txt")
    assert (got.exit_code, (root / "out.txt").stat().st_size) == (0, 10_000)


async def test_cpu_limit_applies(root: Path) -> None:
    # sha256sum of an endless stream burns CPU until RLIMIT_CPU stops it.
    (root / "zero").symlink_to("/dev/zero")
    registry = make(
        root, allow=["sha256sum"], limits=ResourceLimits(cpu_seconds=1), confine_arguments=False
    )
    got = await run(registry, "sha256sum", "zero", timeout=20)
    assert got.signal in ("SIGXCPU", "SIGKILL")


async def test_bad_input(root: Path) -> None:
    registry = make(root, max_stdin_bytes=4)
    with pytest.raises(InvalidToolArguments):
        await run(registry, "cat", stdin="12345")
    with pytest.raises(InvalidToolArguments):
        await registry.call("shell.exec", {"argv": []})
    with pytest.raises(InvalidToolArguments):
        await run(registry, "echo", "a\0b")
    with pytest.raises(InvalidToolArguments):
        await run(registry, "echo", timeout=1000)


def test_construction(root: Path) -> None:
    tool = ShellExec(Workspace(root))
    assert set(tool.programs) <= set(DEFAULT_SHELL_PROGRAMS)
    assert "ls" in tool.programs
    assert all(os.path.isabs(p) for p in tool.programs.values())
    for bad in ("python", "curl", "sh", "bash", "node", "wget", "xargs", "env"):
        assert bad not in tool.programs
    assert "ls" in tool.description
    with pytest.raises(InvalidArgument, match="not found"):
        ShellExec(Workspace(root), allow=["no-such-program-anywhere"])
    with pytest.raises(InvalidArgument, match="bare program name"):
        ShellExec(Workspace(root), allow=["/bin/ls"])
