"""A real ``loom serve`` with its HTTP port on a free port, and the URL it says it serves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from tests.sdk._cli_support import Running, running

_DASHBOARD = r"dashboard on (https?://\S+/)"


@asynccontextmanager
async def serve_http(
    tmp_path: Path, *extra: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[tuple[Running, str, str]]:
    """``loom serve --port 0`` (so its HTTP port is a free one too): the process, the gRPC
    address and the dashboard's URL (``http://127.0.0.1:PORT/``)."""
    data = tmp_path / "serve-data"
    async with running(
        "serve", "--port", "0", "--data-dir", str(data), *extra, cwd=tmp_path, env=env
    ) as server:
        address = (await server.wait_for(r"listening on (\S+:\d+)")).group(1)
        url = (await server.wait_for(_DASHBOARD)).group(1)
        yield server, address, url
