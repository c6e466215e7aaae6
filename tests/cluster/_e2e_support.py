"""The end-to-end cluster: a 3-server NATS cluster (JetStream, routes on free ports) and
``loom serve --nats URL1,URL2,URL3 --node X`` processes on it, with SDK agent processes
connected to the nodes. Readiness is what each process says or serves (the NATS monitor's
``/healthz`` and ``/routez``, a node's startup line), waited for with bounded deadlines.

Every server keeps its ports and store across a kill and a start, so a node reconnects to it
and a restarted cluster finds what it stored.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio

from loom.cluster import find_nats_server

from ..sdk._cli_support import Running, clean_env, free_port, loom, running, running_argv

HEARTBEAT = 0.5


class NatsNode:
    """One server of the NATS cluster: fixed ports, its own JetStream store."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.store = root / f"nats-{name}"
        self.port = free_port()
        self.cluster_port = free_port()
        self.monitor_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / f"nats-{name}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, routes: Sequence[int]) -> None:
        argv = [str(find_nats_server()), "-n", self.name, "-a", "127.0.0.1"]
        argv += ["-p", str(self.port), "-m", str(self.monitor_port)]
        argv += ["-js", "-sd", str(self.store), "--cluster_name", "loom-e2e"]
        argv += ["--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
        argv += ["--routes", ",".join(f"nats://127.0.0.1:{p}" for p in routes)]
        with self.log.open("ab") as out:
            # A quick fork; readiness is waited for through the monitor port.
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def pause(self) -> None:
        """SIGSTOP it: it takes no more from its sockets and answers nothing (a server that
        hangs; a SIGKILL then loses what it took)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT it after :meth:`pause`: it reads its sockets again (a hang that ends)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def monitor(self, path: str) -> dict[str, object] | None:
        """The monitor endpoint's JSON, or ``None`` while it does not answer (or not 200)."""
        url = f"http://127.0.0.1:{self.monitor_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                data: dict[str, object] = json.loads(answer.read())
                return data
        except (OSError, ValueError):
            return None


class NatsCluster:
    """Three NATS servers routed to each other, JetStream clustered."""

    def __init__(self, root: Path) -> None:
        self.servers = [NatsNode(root, f"n{i}") for i in range(3)]

    @property
    def urls(self) -> str:
        return ",".join(s.url for s in self.servers)

    def start(self, server: NatsNode) -> None:
        server.start([s.cluster_port for s in self.servers if s is not server])

    async def wait_formed(self, servers: Sequence[NatsNode] | None = None) -> None:
        """Until each server (of ``servers``, else all) routes to every other one up and
        says it is healthy with JetStream (its meta group has a leader)."""
        servers = list(servers if servers is not None else self.servers)
        with anyio.fail_after(60):
            for server in servers:
                while not await anyio.to_thread.run_sync(self._formed, server, len(servers)):
                    if server.proc is None or server.proc.poll() is not None:
                        raise AssertionError(server.log.read_text())
                    await anyio.sleep(0.05)

    @staticmethod
    def _formed(server: NatsNode, size: int) -> bool:
        routez = server.monitor("/routez")
        if routez is None or int(str(routez.get("num_routes", 0))) < size - 1:
            return False
        healthz = server.monitor("/healthz")
        return healthz is not None and healthz.get("status") == "ok"

    async def start_all(self) -> None:
        for server in self.servers:
            self.start(server)
        await self.wait_formed()

    def _streams(self) -> dict[str, dict[str, object]]:
        """Each JetStream stream of the cluster, as the live servers report it."""
        found: dict[str, dict[str, object]] = {}
        for server in self.servers:
            if server.proc is None:
                continue
            jsz = server.monitor("/jsz?streams=true&config=true&accounts=true") or {}
            for account in jsz.get("account_details", []) or []:  # type: ignore[attr-defined]
                for stream in account.get("stream_detail", []) or []:
                    found.setdefault(stream["name"], stream)
        return found

    async def replicas(self, stream: str) -> int:
        """How many servers hold ``stream`` (its configured replicas)."""
        streams = await anyio.to_thread.run_sync(self._streams)
        config = streams[stream].get("config") or {}
        return int(config.get("num_replicas") or 1)  # type: ignore[attr-defined]

    async def leader_of(self, stream: str) -> NatsNode:
        """The server leading ``stream``'s replicas."""
        streams = await anyio.to_thread.run_sync(self._streams)
        leader = (streams[stream].get("cluster") or {}).get("leader")  # type: ignore[attr-defined]
        return next(s for s in self.servers if s.name == leader)

    async def wait_streams(self, *names: str) -> None:
        """Until each stream of ``names`` has a leader (after a restart JetStream recovers
        them from the stores, one raft election each)."""
        with anyio.fail_after(60):
            while True:
                streams = await anyio.to_thread.run_sync(self._streams)
                if all(_settled(streams.get(n)) for n in names):
                    return
                await anyio.sleep(0.1)

    def kill_all(self) -> None:
        for server in self.servers:
            server.kill()


def _settled(stream: dict[str, object] | None) -> bool:
    cluster = (stream or {}).get("cluster") or {}
    return bool(cluster.get("leader"))  # type: ignore[attr-defined]


@asynccontextmanager
async def nats_cluster(root: Path) -> AsyncIterator[NatsCluster]:
    found = NatsCluster(root)
    try:
        await found.start_all()
        yield found
    finally:
        found.kill_all()


class Nodes:
    """``loom serve`` nodes on a NATS cluster, and agent processes on them."""

    def __init__(self, root: Path, nats: NatsCluster, stack: AsyncExitStack) -> None:
        self.root = root
        self.nats = nats
        self.stack = stack
        self.servers: dict[str, Running] = {}
        self.addresses: dict[str, str] = {}
        self.agents: dict[str, Running] = {}  # by the name given to agent()
        self.env: dict[str, str] = {}

    async def start(self, name: str, *extra: str, env: Mapping[str, str] | None = None) -> Running:
        """Start node ``name`` (data dir of its own) and wait for its startup lines."""
        environ = clean_env(**(env if env is not None else self.env))
        server = await self.stack.enter_async_context(
            running(
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(self.root / f"data-{name}"),
                "--nats",
                self.nats.urls,
                "--node",
                name,
                "--cluster-heartbeat",
                str(HEARTBEAT),
                *extra,
                cwd=self.root,
                env=environ,
            )
        )
        match = await server.wait_for(r"listening on (\S+:\d+)", timeout=60)
        self.servers[name] = server
        self.addresses[name] = match.group(1)
        return server

    async def wait_joined(self) -> None:
        """Until each node has heard every other (its first heartbeat): a test relies on it."""
        for name, server in self.servers.items():
            for other in self.servers:
                if other != name:
                    await server.wait_for(f"cluster: node {other} joined", timeout=30)

    async def agent(
        self, node: str, name: str, text: str, *, ready: str | None = None, **env: str
    ) -> Running:
        """Start the agent script ``text`` as a process connected to ``node``; wait for its
        ``connected ... as <ready>`` line (``ready`` defaults to ``name``)."""
        path = self.root / f"{name}.py"
        path.write_text(text)
        environ = clean_env(**self.env, LOOM_BRIDGE_ADDR=self.addresses[node], **env)
        agent = await self.stack.enter_async_context(
            running_argv([sys.executable, "-u", str(path)], cwd=self.root, env=environ)
        )
        await agent.wait_for(f"connected to .* as {ready or name}$", timeout=60)
        self.agents[name] = agent
        return agent

    async def loom(self, node: str, *args: str, **env: str) -> str:
        """``loom <args> -a <node>``: its stdout (the test fails on a non-zero exit)."""
        done = await loom(
            *args, "-a", self.addresses[node], cwd=self.root, env=clean_env(**self.env, **env)
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    async def write_status(self) -> None:
        """Each live node's ``loom status`` (its cluster links, NATS, durable figures) into
        ``status-<node>.txt``: a failure's diagnosis, so no answer is an answer too."""
        for name, address in self.addresses.items():
            try:
                done = await loom("status", "-a", address, cwd=self.root, env=clean_env(**self.env))
                text = (done.stdout + done.stderr).decode(errors="replace")
            except (TimeoutError, OSError) as exc:
                text = f"no status: {exc!r}"
            (self.root / f"status-{name}.txt").write_text(text)

    def write_outputs(self) -> None:
        """Every node's and agent's output into ``out-<name>.log`` (agents ``out-agent-...``)."""
        for name, server in self.servers.items():
            (self.root / f"out-{name}.log").write_text(server.output)
        for name, agent in self.agents.items():
            (self.root / f"out-agent-{name}.log").write_text(agent.output)

    async def wait_listed(self, node: str, *ids: str, timeout: float = 20) -> str:
        """``loom agents`` on ``node`` once it lists every one of ``ids`` running."""
        with anyio.fail_after(timeout):
            while True:
                table = await self.loom(node, "agents")
                rows = {line.split()[0]: line.split() for line in table.splitlines()[1:] if line}
                if all(i in rows and rows[i][1] == "running" for i in ids):
                    return table


@asynccontextmanager
async def nodes_on(
    root: Path, nats: NatsCluster, *names: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[Nodes]:
    """The nodes ``names``, joined. On a failure (a timeout included) each node's ``loom
    status`` is written to ``status-<node>.txt`` in ``root`` as it was then, and every
    process's output to ``out-<name>.log`` once it ended: what a failed run leaves to read."""
    found: Nodes | None = None
    try:
        async with AsyncExitStack() as stack:
            found = Nodes(root, nats, stack)
            found.env = dict(env or {})
            for name in names:
                await found.start(name)
            await found.wait_joined()
            try:
                yield found
            except BaseException:
                with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                    await found.write_status()
                raise
    finally:
        if found is not None:
            found.write_outputs()
