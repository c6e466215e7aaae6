"""``[a2a.remote.<name>]`` of ``loom.toml``: remote A2A agents that ``loom serve`` offers as
tools, and the part of the server that opens them.

::

    [a2a.remote.weather]
    url = "https://weather.example.org/a2a"  # where its agent card is served
    token_env = "WEATHER_A2A_TOKEN"          # optional: a bearer token, read from this variable
    timeout_s = 120                          # optional: each call's timeout (default: registry's)
    connect_timeout_s = 10                   # optional: to connect and fetch the card

Each becomes the tool ``a2a.<name>`` (:class:`loom.A2AAgentTool`) in the server's runtime
registry, so ``loom tools`` lists it, its agents call it with ``ctx.tool`` or from their LLM
loop, and agents in other processes through the bridge. One whose card cannot be had at start
is left out and tried again in the background until it can. Only the ``remote`` key of ``[a2a]`` is
read here; the rest of ``[a2a]`` is the A2A server's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from loom.runtime import AgentRuntime, ConfigError
from loom.runtime.tools import ToolError

if TYPE_CHECKING:
    from .._a2a_tool import A2AAgentTool

__all__ = ["A2ARemote", "decode_a2a_remote", "open_a2a_remote"]

log = logging.getLogger("loom.serve")

_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}")


class A2ARemote(msgspec.Struct, frozen=True, kw_only=True):
    """One remote A2A agent of ``[a2a.remote.<name>]``, its token read from the environment.

    Attributes:
        name: the tool's name, ``a2a.<name>``.
        url: the agent's base URL.
        token: the bearer token (``None``: none sent).
        timeout_s: each call's timeout (``None``: the registry's default).
        connect_timeout_s: seconds to connect, send, or fetch the card.
    """

    name: str
    url: str
    token: str | None = msgspec.field(default=None)
    timeout_s: float | None = None
    connect_timeout_s: float = 10.0

    def __repr__(self) -> str:  # never show the token
        return f"A2ARemote(name={self.name!r}, url={self.url!r})"


class _Table(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str
    token_env: str | None = None
    timeout_s: float | None = None
    connect_timeout_s: float = 10.0


def decode_a2a_remote(a2a: Any, *, where: str, environ: Mapping[str, str]) -> tuple[A2ARemote, ...]:
    """The remote agents of ``[a2a.remote]`` (``a2a`` is the whole ``[a2a]`` table).

    Raises:
        ConfigError: a table is malformed (unknown key, wrong type, a URL that is not
            http(s), a timeout that is not positive), or its ``token_env`` is unset or empty.
            The message names the table and the variable, never a token.
    """
    if not isinstance(a2a, dict):
        raise ConfigError(f"{where} [a2a]: must be a table")
    remote = a2a.get("remote", {})
    if not isinstance(remote, dict):
        raise ConfigError(f"{where} [a2a.remote]: must be a table of [a2a.remote.<name>] tables")
    agents: list[A2ARemote] = []
    for name, fields in remote.items():
        at = f"{where} [a2a.remote.{name}]"
        if not _KEY.fullmatch(name):
            raise ConfigError(f"{at}: the name is letters, digits, '_' and '-' (at most 64)")
        try:
            table = msgspec.convert(fields, _Table)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{at}: {exc}") from None
        if not table.url.startswith(("http://", "https://")):
            raise ConfigError(f"{at}: url is http:// or https://, not {table.url!r}")
        for key, value in (
            ("timeout_s", table.timeout_s),
            ("connect_timeout_s", table.connect_timeout_s),
        ):
            if value is not None and not value > 0:
                raise ConfigError(f"{at}: {key} must be > 0, not {value!r}")
        token = None
        if table.token_env is not None:
            token = environ.get(table.token_env, "")
            if not token:
                raise ConfigError(
                    f"{at}: ${table.token_env} is unset or empty: set it to the agent's token"
                )
        agents.append(
            A2ARemote(
                name=f"a2a.{name}",
                url=table.url,
                token=token,
                timeout_s=table.timeout_s,
                connect_timeout_s=table.connect_timeout_s,
            )
        )
    return tuple(agents)


# A remote agent whose card could not be had at start is tried again, waiting this long first,
# doubling up to the cap: an agent that comes up after the server becomes a tool then.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


@asynccontextmanager
async def open_a2a_remote(
    remotes: tuple[A2ARemote, ...], runtime: AgentRuntime
) -> AsyncIterator[None]:
    """Fetch every remote agent's card (at once) and register each as a tool of ``runtime``;
    close them on exit.

    A remote agent whose card cannot be had (unreachable, refused, a bad card) is left out
    with a warning naming why, and the server starts without it; it is tried again in the
    background (after 1 s, doubling to 60 s) until its card comes, and registered then.
    """
    if not remotes:
        yield
        return
    async with AsyncExitStack() as stack:
        opened: list[tuple[A2ARemote, A2AAgentTool]] = []
        left_out: list[A2ARemote] = []

        async def first(remote: A2ARemote) -> None:
            tool = await _open(remote)
            if tool is None:
                left_out.append(remote)
            else:
                opened.append((remote, tool))
                stack.push_async_callback(tool.aclose)

        async with anyio.create_task_group() as tg:
            for remote in remotes:
                tg.start_soon(first, remote)
        for remote, tool in opened:
            runtime.tools.register(tool, timeout=remote.timeout_s)
        if opened:
            log.info(
                "loom serve: A2A agents: %s",
                ", ".join(f"{tool.name} ({tool.url})" for _, tool in opened),
            )

        async def retry(remote: A2ARemote) -> None:
            pause = RETRY_FIRST_S
            while True:
                await anyio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                tool = await _open(remote, quiet=True)
                if tool is not None:
                    stack.push_async_callback(tool.aclose)
                    runtime.tools.register(tool, timeout=remote.timeout_s)
                    log.info("loom serve: A2A agent %s (%s) is up: registered", tool.name, tool.url)
                    return

        async with anyio.create_task_group() as retries:
            for remote in left_out:
                retries.start_soon(retry, remote)
            try:
                yield
            finally:
                retries.cancel_scope.cancel()


async def _open(remote: A2ARemote, *, quiet: bool = False) -> A2AAgentTool | None:
    """The remote agent's tool, its card fetched; ``None`` (and a warning, unless ``quiet``)
    when the card cannot be had in time."""
    from .._a2a_tool import A2AAgentTool  # the a2a-sdk loads only when it is used

    tool = A2AAgentTool(
        remote.url,
        name=remote.name,
        token=remote.token,
        connect_timeout_s=remote.connect_timeout_s,
    )
    reason = "no card within connect_timeout_s"
    with anyio.move_on_after(remote.connect_timeout_s):
        try:
            return await tool.__aenter__()
        except ToolError as exc:
            reason = str(exc)
    if not quiet:
        log.warning("loom serve: A2A agent %s left out for now (retrying): %s", remote.name, reason)
    else:
        log.debug("loom serve: A2A agent %s still unavailable: %s", remote.name, reason)
    return None
