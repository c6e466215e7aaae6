"""``loom serve``: host the runtime until a signal asks it to stop.

The composition root of a server process: it builds the bus (and, as later layers land, the
actor runtime and the gRPC bridge), reports readiness through ``task_status``, and on SIGINT or
SIGTERM drains within the configured grace before it returns.
"""

from __future__ import annotations

import logging
import os
import signal

import anyio
from anyio.abc import TaskStatus

from loom.runtime import EventBus

from ._config import ServeConfig

__all__ = ["serve"]

log = logging.getLogger("loom.serve")


async def serve(
    config: ServeConfig, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Run a Loom server until SIGINT or SIGTERM, then drain and stop."""
    data_dir = await anyio.Path(config.data_dir).resolve()
    await data_dir.mkdir(parents=True, exist_ok=True)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with EventBus(drain_grace=config.drain_grace_s) as bus:
            log.info("loom serve: event bus up (pid %d, data dir %s)", os.getpid(), data_dir)
            task_status.started()
            async for signum in signals:
                log.info("loom serve: %s received, draining", signal.Signals(signum).name)
                break
            await bus.aclose()
    log.info("loom serve: stopped")
