"""Issue 17, item 10: one idle client pinned the server's memory (61 -> 661 MB and growing),
because its mailbox was bounded by count (2048 events) whatever their size. Every buffer is
bounded in bytes too; here a real ``loom serve`` with ``--max-buffer-bytes`` and a real client
subprocess that never reads, fed large events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from loom.bridge import AdminClient
from loom.runtime import DeadlineExceeded, Event, LoomError

from ._cli_support import loom_serve

pytestmark = pytest.mark.anyio

IDLE = Path(__file__).with_name("_idle_agent.py")
BOUND = 1024 * 1024
PAYLOAD = 64 * 1024
ATTEMPTS = 600  # 37.5 MiB, were they all accepted


async def test_an_idle_client_holds_at_most_the_byte_bound(tmp_path: Path) -> None:
    async with loom_serve(tmp_path, "--max-buffer-bytes", str(BOUND)) as (_, address):
        idle = await anyio.open_process(
            [sys.executable, str(IDLE), address, "idle", "big.>"], stdout=subprocess.PIPE
        )
        try:
            assert idle.stdout is not None
            with anyio.fail_after(20):
                assert (await idle.stdout.receive()).startswith(b"ready")
            accepted = 0
            async with AdminClient(address, timeout=10) as admin:
                with anyio.fail_after(120):
                    for i in range(ATTEMPTS):
                        event = Event(type="big", payload=bytes([i % 256]) * PAYLOAD)
                        try:
                            await admin.publish("big.data", [event], timeout=1.0)
                        except (DeadlineExceeded, LoomError):
                            break  # held back: the idle agent's mailbox is full
                        accepted += 1
                    stats = await admin.statistics(subscriptions=True)
            (mailbox,) = [s for s in stats.subscriptions if s.pattern == "agent.idle.replies"]
            assert mailbox.max_bytes == BOUND
            # At most the bound, and one event over it (one always fits an empty buffer).
            assert mailbox.queued_bytes <= BOUND + PAYLOAD + 1024
            assert mailbox.waiting_publishers <= 1
            # The rest of what was accepted sits in gRPC's buffers of the stream (flow
            # control windows, bounded by gRPC itself), not in Loom's: far fewer than the
            # 2048 events of the count bound, and than the ATTEMPTS offered.
            assert accepted < ATTEMPTS, "the publisher was never held back"
            assert mailbox.dropped.total == 0  # Batched: nothing dropped, the publisher waited
        finally:
            idle.kill()
            with anyio.CancelScope(shield=True):
                await idle.wait()
                await idle.aclose()
