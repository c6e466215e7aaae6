"""A bridge server run as a subprocess by the soak test, so the memory measured is its own.

Usage: python _soak_server.py HANDSHAKE_TIMEOUT_S. Logs (warnings and up) to stderr, prints
"listening PORT" once serving, and for each line "measure" read from stdin prints one line
"measured rss_kb=.. tasks=.. objects=.. connected=.. registered=.. pending=.. streams=..
malformed=..", measured after a full garbage collection and after handing the memory the
allocator holds free back to the system (glibc's ``malloc_trim``), so the resident size is
what is in use. Stops at the end of stdin.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import sys
from pathlib import Path

import anyio
import anyio.to_thread

from loom.bridge import BridgeServer, Limits
from loom.runtime import AgentRuntime, EventBus


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _trim() -> None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


async def main(handshake_timeout_s: float) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    limits = Limits(handshake_timeout_s=handshake_timeout_s)
    async with (
        EventBus() as bus,
        AgentRuntime(bus) as runtime,
        BridgeServer(runtime, limits=limits, grace_s=0.5) as server,
    ):
        print(f"listening {server.port}", flush=True)
        while line := await anyio.to_thread.run_sync(sys.stdin.readline):
            if line.strip() != "measure":
                continue
            gc.collect()
            _trim()
            stats = server.statistics()
            print(
                f"measured rss_kb={_rss_kb()} tasks={len(asyncio.all_tasks())} "
                f"objects={len(gc.get_objects())} connected={stats.connected} "
                f"registered={stats.registered} pending={stats.pending_tool_calls} "
                f"streams={len(server.hub.streams)} malformed={stats.malformed_requests}",
                flush=True,
            )


if __name__ == "__main__":
    anyio.run(main, float(sys.argv[1]))
