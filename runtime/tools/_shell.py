"""``shell.exec``: run an allowlisted program on an argv list, inside the workspace, bounded.

What makes it safe by construction:

* **No shell.** The argv list is executed directly; ``;``, ``|``, ``$(...)``, globs and quotes
  reach the program as literal characters.
* **Programs by name from an allowlist**, resolved once to absolute paths on a fixed search
  path when the tool is built. The default list holds text tools only; no interpreter, shell,
  network tool or program that runs other programs. ``date`` is left out because ``date -s``
  sets the clock, ``xargs``/``env``/``nice``/``timeout`` because they run programs.
* **Options from an allow-list, files through the jail** (unless
  ``confine_arguments=False``): each default program's argv is parsed as its ``getopt_long``
  parses it (``_argv.py``); an option not on that program's list of safe options is refused
  by name (``sort --files0-from`` reads file names from a file, ``--compress-program`` runs a
  program, ``find -exec``, ``grep -R``, ``ls -L``...), and every file it names, as operand or
  option value, goes through :meth:`Workspace.check`: its real path must be inside, a file
  with other hard links is refused, a directory it reads recursively is walked first. A
  program without rules (one the operator allowed) gets every argument screened as a path.
  These checks precede the program's own opens: a name swapped for a link in between (by a
  writer outside Loom's tools) is not seen. Defence in depth, not a sandbox; for hostile
  workloads add an OS sandbox (namespaces, Landlock) around Loom.
* **cwd inside the workspace**, a **clean environment** (the parent's variables, API keys
  among them, never reach the child), a private ``TMPDIR`` per call, stdin from
  ``/dev/null`` unless given.
* **Resource limits** (:class:`ResourceLimits`) applied in the child before ``exec``.
* **No process outlives the call**: the launcher is the child subreaper of the program's
  tree, so every orphan below it, even one that left with ``setsid`` or a double fork, is
  reparented to it; when the program exits it kills and reaps all of them before exiting
  itself, and a timeout or a cancellation has it do the same at once (its process group is
  killed if it does not). An **output cap** per stream: output past it is drained and
  counted, not kept, so a chatty program neither blocks on a full pipe nor fills memory.

How limits reach the child: ``anyio.open_process`` has no ``preexec_fn`` (which is unsafe in
a threaded parent anyway), so the child is started as ``python -I -S -c <launcher>``, a fixed
launcher written here that calls ``setrlimit``, forks and ``execv``\\ s the resolved
program, and stays to clean up after it. The launcher takes its input only from its own
argv and never runs anything but that ``execv``; it costs one interpreter start and a fork
(~20 ms) per call. Running ``subprocess.Popen`` in a worker thread would have kept
``preexec_fn`` but made cancellation and output draining thread-bound.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from typing import Final

import anyio
import anyio.to_thread
import msgspec
from anyio.abc import ByteReceiveStream, ByteSendStream, Process

from .._errors import InvalidArgument
from ._argv import FileArgument, file_arguments
from ._errors import InvalidToolArguments, ToolPermissionDenied, ToolTimeout
from ._tool import JSONObject
from ._workspace import Workspace

__all__ = ["DEFAULT_SHELL_PROGRAMS", "ExecResult", "ResourceLimits", "ShellExec"]

DEFAULT_SHELL_PROGRAMS: Final = (
    "cat",
    "diff",
    "echo",
    "find",
    "grep",
    "head",
    "ls",
    "sort",
    "tail",
    "uniq",
    "wc",
)
"""Harmless text tools. Missing ones are skipped when the default list is used."""

DEFAULT_SEARCH_PATH: Final = "/usr/local/bin:/usr/bin:/bin"

# Runs in the child: become a child subreaper, apply the limits given as argv[1]
# ("NAME=VALUE,..."), fork the program argv[2] with argv[3:] as its argv, wait for it, then
# kill and reap everything left below (a subreaper inherits every orphan of its subtree, so
# children that left with setsid or a double fork are still found), and exit as the program
# did. SIGTERM (from Loom on a timeout or a cancellation) skips to the killing. Kept small
# and fixed on purpose: it takes its input only from its own argv.
_LAUNCHER: Final = """\
import os, signal, sys, time
me = os.getpid()
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except Exception:
    pass  # not Linux: the process group is all Loom can kill
import resource
class Stop(BaseException):
    pass
def stop(signum, frame):
    raise Stop
signal.signal(signal.SIGTERM, stop)
# Python ignores these at startup and an ignored signal stays ignored across exec.
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
for item in filter(None, sys.argv[1].split(",")):
    name, value = item.split("=")
    which = getattr(resource, name)
    hard = resource.getrlimit(which)[1]
    value = int(value)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))
def children():
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    found = []
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    if int(f.read().rsplit(b")", 1)[1].split()[1]) == me:
                        found.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return found
status = None
try:
    try:
        try:
            pid = os.fork()
        except OSError as exc:  # RLIMIT_NPROC, say: the launcher counts as one process
            sys.stderr.write(f"cannot start {sys.argv[3]}: {exc.strerror}\\n")
            os._exit(127)
        if pid == 0:
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.execv(sys.argv[2], sys.argv[3:])
            except OSError as exc:
                sys.stderr.write(f"cannot run {sys.argv[3]}: {exc.strerror}\\n")
            finally:
                os._exit(127)
        status = os.waitpid(pid, 0)[1]
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
except Stop:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    # Each round kills our children; theirs then become ours, until none is left.
    for pid in children():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        break
    time.sleep(0.002)
code = 128 + signal.SIGTERM if status is None else os.waitstatus_to_exitcode(status)
if code < 0:
    try:
        signal.signal(-code, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(me, -code)
    code = 128 - code
os._exit(code)
"""

_GRACE: Final = 2.0
# How long output may still arrive after the program's tree is gone: only a writer outside
# the tree (a descendant that escaped the launcher) could hold a pipe open that long.
_DRAIN_GRACE: Final = 0.5
_CHUNK: Final = 65536


class ResourceLimits(msgspec.Struct, frozen=True, kw_only=True):
    """``setrlimit`` limits for each child (soft = hard, so it cannot raise them).

    ``None`` leaves a limit as inherited. Core dumps are always off.

    Attributes:
        cpu_seconds: CPU time; past it the child gets ``SIGXCPU`` (then ``SIGKILL``).
        address_space: bytes of virtual memory; allocations past it fail.
        file_size: the largest file the child may write, in bytes (``SIGXFSZ`` past it).
        open_files: file descriptors.
        processes: ``RLIMIT_NPROC``. Off by default: Linux counts every process of the user,
            not just the child's (the launcher is one of them), and does not apply it to
            root, so no default fits all.
    """

    cpu_seconds: int | None = 10
    address_space: int | None = 1 << 30
    file_size: int | None = 16 << 20
    open_files: int | None = 256
    processes: int | None = None

    def encode(self) -> str:
        items = {
            "RLIMIT_CORE": 0,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_AS": self.address_space,
            "RLIMIT_FSIZE": self.file_size,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_NPROC": self.processes,
        }
        return ",".join(f"{k}={v}" for k, v in items.items() if v is not None)


class ExecResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ``shell.exec`` returns.

    Attributes:
        exit_code: the program's exit status; negative ``-N`` when killed by signal ``N``.
        signal: the name of that signal (``"SIGXFSZ"``), or ``None``.
        stdout: standard output, decoded as UTF-8 (invalid bytes replaced), ending with a
            ``[... N more bytes not shown]`` marker when cut.
        stderr: standard error, likewise.
        stdout_truncated: stdout was longer than the cap.
        stderr_truncated: stderr was longer than the cap.
    """

    exit_code: int
    signal: str | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool


class ShellExec:
    """``shell.exec``: run one allowlisted program with an argv list, without a shell.

    The call returns when the program exits, having killed every process it left behind,
    those that left its process group or session included. A timeout raises
    :class:`ToolTimeout` after killing the whole tree; cancellation (the registry's timeout
    included) kills it the same way (``docs/tools.md`` says what can still escape).

    Args:
        workspace: the confining workspace; the default cwd is its root.
        allow: program names to allow (``None``: :data:`DEFAULT_SHELL_PROGRAMS`, skipping
            those not installed). Each is resolved on ``search_path`` now.
        search_path: where programs are looked up, and the child's ``PATH``.
        timeout: the default per-call timeout in seconds; a call may ask for less or more,
            up to ``max_timeout``.
        max_timeout: the most a call may ask for.
        max_output_bytes: the cap per stream (stdout, stderr).
        max_stdin_bytes: the most input a call may give.
        limits: resource limits of each child.
        confine_arguments: check options against each program's allow-list and file
            arguments with :meth:`Workspace.check` (see the module docstring); ``False``
            turns both off (the cwd stays confined, the tree is still killed).
        env: extra environment variables for the child, on top of a clean base.

    Raises:
        InvalidArgument: a name is not a bare program name, or an explicitly allowed program
            is not found.
    """

    name = "shell.exec"

    def __init__(
        self,
        workspace: Workspace,
        *,
        allow: Iterable[str] | None = None,
        search_path: str = DEFAULT_SEARCH_PATH,
        timeout: float = 10.0,
        max_timeout: float = 60.0,
        max_output_bytes: int = 64 << 10,
        max_stdin_bytes: int = 1 << 20,
        limits: ResourceLimits | None = None,
        confine_arguments: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not 0 < timeout <= max_timeout:
            raise InvalidArgument("need 0 < timeout <= max_timeout")
        if max_output_bytes < 1 or max_stdin_bytes < 0:
            raise InvalidArgument("output and input caps must be positive")
        self._workspace = workspace
        self._programs = _resolve(allow, search_path)
        self._timeout = timeout
        self._max_timeout = max_timeout
        self._max_output = max_output_bytes
        self._max_stdin = max_stdin_bytes
        self._limits = (limits or ResourceLimits()).encode()
        self._confine = confine_arguments
        self._env = {"PATH": search_path, "LC_ALL": "C.UTF-8", "HOME": str(workspace.root)}
        self._env.update(env or {})
        names = ", ".join(sorted(self._programs)) or "(none)"
        self.description = (
            "Run one program with arguments, without a shell (no pipes, redirection, globs or "
            "variables: every argument is passed literally). The working directory is inside "
            "the workspace; paths must be relative. Allowed programs: " + names + "."
        )
        self.parameters_schema: JSONObject = {
            "type": "object",
            "properties": {
                "argv": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "description": "The program name, then its arguments.",
                },
                "cwd": {"type": "string", "default": ".", "description": "Relative folder."},
                "stdin": {"type": "string", "description": "Text given on standard input."},
                "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": max_timeout},
            },
            "required": ["argv"],
            "additionalProperties": False,
        }

    @property
    def programs(self) -> Mapping[str, str]:
        """The allowed programs: name to absolute path."""
        return dict(self._programs)

    async def call(self, arguments: JSONObject) -> ExecResult:
        argv: list[str] = list(arguments["argv"])
        program = self._programs.get(argv[0])
        if program is None:
            raise ToolPermissionDenied(f"program {argv[0]!r} is not allowed")
        for index, arg in enumerate(argv[1:], 1):
            if "\0" in arg:
                raise InvalidToolArguments("arguments cannot contain NUL", path=("argv", index))
        # Options first: refusing one needs no file system access.
        files = file_arguments(argv[0], argv[1:]) if self._confine else []
        cwd_arg: str = arguments.get("cwd", ".")
        parts = self._workspace.components(cwd_arg)
        stdin = arguments.get("stdin")
        data = None if stdin is None else stdin.encode("utf-8", "replace")
        if data is not None and len(data) > self._max_stdin:
            raise InvalidToolArguments(
                f"stdin holds more than {self._max_stdin} bytes", path=("stdin",)
            )
        await anyio.to_thread.run_sync(self._check_files, parts, cwd_arg, files)
        timeout: float = arguments.get("timeout", self._timeout)
        command = [sys.executable, "-I", "-S", "-c", _LAUNCHER, self._limits, program, *argv]
        return await self._run(command, self._workspace.real_path(parts), data, timeout)

    def _check_files(self, cwd: list[str], cwd_arg: str, files: list[FileArgument]) -> None:
        with self._workspace.directory(cwd, cwd_arg, target=True):
            pass  # proves it is a directory inside the root, reached without symlinks
        for found in files:
            self._workspace.check(found.path, found.access, cwd)

    async def _run(
        self, command: list[str], cwd: str, data: bytes | None, timeout: float
    ) -> ExecResult:
        # TMPDIR: a private directory per call, so that programs' temporary files (sort's
        # spills) are not written to the host's /tmp; removed afterwards.
        tmp = tempfile.mkdtemp(prefix="loom-shell-")
        try:
            return await self._spawn(command, cwd, data, timeout, {**self._env, "TMPDIR": tmp})
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(shutil.rmtree, tmp, True)

    async def _spawn(
        self,
        command: list[str],
        cwd: str,
        data: bytes | None,
        timeout: float,
        env: dict[str, str],
    ) -> ExecResult:
        # Shielded: cancelled half-way, asyncio would SIGKILL the launcher alone, leaving the
        # program it may already have started behind; spawning is short.
        with anyio.CancelScope(shield=True):
            process = await anyio.open_process(
                command,
                stdin=subprocess.DEVNULL if data is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,  # its own session and group, so a kill reaches all
            )
        out, err = _Capture(self._max_output), _Capture(self._max_output)
        code: int | None = None
        try:
            with anyio.move_on_after(timeout):
                async with anyio.create_task_group() as tg:
                    assert process.stdout is not None
                    assert process.stderr is not None
                    tg.start_soon(out.drain, process.stdout)
                    tg.start_soon(err.drain, process.stderr)
                    if data is not None:
                        assert process.stdin is not None
                        tg.start_soon(_feed, process.stdin, data)
                    code = await process.wait()
                    # The launcher killed the program's tree before it exited, so the pipes
                    # end now; a writer it could not reach must not hold the call open.
                    with anyio.move_on_after(_DRAIN_GRACE):
                        await out.done.wait()
                        await err.done.wait()
                    tg.cancel_scope.cancel()
            if code is None:
                raise ToolTimeout(timeout)
        finally:
            if process.returncode is None:
                await _stop(process)
            with anyio.CancelScope(shield=True), anyio.move_on_after(_GRACE):
                await process.aclose()
        return ExecResult(
            exit_code=code,
            signal=signal.Signals(-code).name if code < 0 else None,
            stdout=out.text(),
            stderr=err.text(),
            stdout_truncated=out.dropped > 0,
            stderr_truncated=err.dropped > 0,
        )


class _Capture:
    __slots__ = ("cap", "chunks", "done", "dropped", "kept")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.kept = 0
        self.dropped = 0
        self.chunks: list[bytes] = []
        self.done = anyio.Event()

    async def drain(self, stream: ByteReceiveStream) -> None:
        # Reads to EOF even past the cap, so the child never blocks on a full pipe.
        try:
            async for chunk in stream:
                room = self.cap - self.kept
                if room > 0:
                    self.chunks.append(chunk[:room])
                    self.kept += min(room, len(chunk))
                self.dropped += max(0, len(chunk) - max(room, 0))
        finally:
            self.done.set()

    def text(self) -> str:
        text = b"".join(self.chunks).decode("utf-8", "replace")
        if self.dropped:
            text += f"\n[... {self.dropped} more bytes not shown]"
        return text


async def _feed(stream: ByteSendStream, data: bytes) -> None:
    try:
        for start in range(0, len(data), _CHUNK):
            await stream.send(data[start : start + _CHUNK])
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # the program stopped reading; what it did not read is not our failure
    finally:
        await stream.aclose()


async def _stop(process: Process) -> None:
    # SIGTERM asks the launcher to kill its tree, which it can see whole (it is their
    # subreaper); if it has not exited within the grace, SIGKILL its process group. It is
    # unreaped until then, so its pid, the group's id, cannot have gone to a stranger.
    with anyio.CancelScope(shield=True):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(_GRACE):
            await process.wait()
        if process.returncode is None:
            _kill_group(process.pid)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _resolve(allow: Iterable[str] | None, search_path: str) -> dict[str, str]:
    explicit = allow is not None
    programs: dict[str, str] = {}
    for name in DEFAULT_SHELL_PROGRAMS if allow is None else allow:
        if not name or "/" in name or name in (".", ".."):
            raise InvalidArgument(f"{name!r} is not a bare program name")
        found = shutil.which(name, path=search_path)
        if found is None:
            if explicit:
                raise InvalidArgument(f"program {name!r} not found on {search_path}")
            continue
        programs[name] = os.path.abspath(found)
    return programs
