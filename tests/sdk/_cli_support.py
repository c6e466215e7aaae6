"""Helpers of the CLI tests: ``loom`` commands as real subprocesses, and a reader that waits
for a line of a running one (readiness is what the process says, never a sleep)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import Process, TaskGroup

LOOM = [sys.executable, "-m", "loom.cli"]
PYTHON = [sys.executable, "-u"]

# `loom run` prefixes each line of an agent with the time and its id.
STAMP = r"\d\d:\d\d:\d\d\.\d{3} "

# `loom serve` and `loom run` (embedded) both say where they listen.
_LISTENING = re.compile(r"listening on (\S+:\d+)")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without LOOM_* variables (a developer's shell must not leak in), and
    with ``LOOM_HTTP_PORT=0``: a ``loom serve`` on a fixed gRPC port would otherwise take the
    fixed HTTP port 50052, which another server on the machine may hold."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    env["LOOM_HTTP_PORT"] = "0"
    env.update(extra)
    return env


class Running:
    """A running ``loom`` subprocess whose merged stdout/stderr is read as it comes."""

    def __init__(self, process: Process, *, group: bool = False) -> None:
        self.process = process
        self.group = group  # signals go to its whole process group (a shell and its child)
        self.lines: list[str] = []
        self._changed = anyio.Event()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *done, pending = pending.split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in done)
            self._changed.set()
            self._changed = anyio.Event()
        if pending:
            self.lines.append(pending.decode(errors="replace"))
        self._changed.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, pattern: str, *, count: int = 1, timeout: float = 20) -> re.Match[str]:
        """The ``count``-th line matching ``pattern`` (a regex), waiting for it to be printed.

        Raises:
            AssertionError: the process ended or ``timeout`` passed first (with its output).
        """
        regex = re.compile(pattern)
        with anyio.move_on_after(timeout):
            while True:
                changed = self._changed
                matches = [m for line in self.lines if (m := regex.search(line))]
                if len(matches) >= count:
                    return matches[count - 1]
                if self.process.returncode is not None and changed.is_set():
                    break
                await changed.wait()
        raise AssertionError(
            f"no {count}x {pattern!r} (exit code {self.process.returncode}); output:\n"
            + self.output
        )

    def count(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.lines if regex.search(line))

    async def wait(self, timeout: float = 15) -> int:
        """Wait for the process to end by itself; its exit code."""
        with anyio.fail_after(timeout):
            return await self.process.wait()

    async def stop(self, signum: signal.Signals = signal.SIGINT, timeout: float = 15) -> int:
        """Send ``signum`` and wait for the exit code."""
        self.signal(signum)
        with anyio.fail_after(timeout):
            return await self.process.wait()

    def signal(self, signum: signal.Signals) -> None:
        """Send ``signum`` (to the process group, if it leads one)."""
        if self.process.returncode is not None:
            return
        if self.group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)


@asynccontextmanager
async def running(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[Running]:
    """Start ``loom *args``; on exit, stop it (SIGTERM, then SIGKILL) if it still runs."""
    async with running_argv([*LOOM, *args], cwd=cwd, env=env) as proc:
        yield proc


@asynccontextmanager
async def running_argv(
    argv: list[str], *, cwd: Path, env: Mapping[str, str] | None = None, group: bool = False
) -> AsyncIterator[Running]:
    """Start ``argv`` (stdout and stderr merged, read as they come); stop it on exit. With
    ``group``, in a process group of its own, which signals reach as a whole (as a Ctrl-C
    in a terminal reaches a shell command and what it started)."""
    process = await anyio.open_process(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        start_new_session=group,
    )
    proc = Running(process, group=group)
    tg: TaskGroup
    async with anyio.create_task_group() as tg:
        tg.start_soon(proc._read)
        try:
            yield proc
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    proc.signal(signal.SIGTERM)
                    with anyio.move_on_after(10):
                        await process.wait()
                    if process.returncode is None:
                        proc.signal(signal.SIGKILL)
                        await process.wait()
                tg.cancel_scope.cancel()
                await process.aclose()


@asynccontextmanager
async def loom_serve(
    tmp_path: Path, *extra: str, env: Mapping[str, str] | None = None, timeout: float = 20
) -> AsyncIterator[tuple[Running, str]]:
    """A real ``loom serve`` on port 0 (in ``env``, else a clean one), and the address it
    says it listens on."""
    data = tmp_path / "serve-data"
    async with running(
        "serve", "--port", "0", "--data-dir", str(data), *extra, cwd=tmp_path, env=env
    ) as server:
        match = await server.wait_for(_LISTENING.pattern, timeout=timeout)
        yield server, match.group(1)


def free_port() -> int:
    """A port nothing listens on now (bound and released: for a server started later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def loom(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = 20,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``loom *args`` to its end (failing the test if it takes over ``timeout``)."""
    with anyio.fail_after(timeout):
        return await anyio.run_process(
            [*LOOM, *args],
            input=stdin,
            check=False,
            cwd=cwd,
            env=dict(env) if env is not None else clean_env(),
        )
