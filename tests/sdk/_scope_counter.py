"""Calls counted across processes, for ``test_scope_exact.py``; not a test module.

Every tool of the test's tree (in the test process, in the turn's process, in the agent
processes) runs inside :meth:`Running.call`: it leaves a file in ``DIR/running`` while it runs
and appends a line ``<tool> <running now>`` to ``DIR/log`` as it starts. A call counts the
files after making its own, so the last of any set of calls running at once sees them all:
the log's largest number is the most calls that ran at once, and its lines are the calls
made.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


class Running:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.running = root / "running"
        self.running.mkdir(parents=True, exist_ok=True)
        self.log = root / "log"

    @asynccontextmanager
    async def call(self, name: str) -> AsyncIterator[None]:
        token = self.running / f"{name}-{uuid.uuid4().hex}"
        token.touch()
        now = len(os.listdir(self.running))
        with self.log.open("a") as log:  # one short append: whole lines from every process
            log.write(f"{name} {now}\n")
        try:
            yield
        finally:
            token.unlink()

    def lines(self) -> list[tuple[str, int]]:
        if not self.log.exists():
            return []
        found = []
        for line in self.log.read_text().splitlines():
            name, now = line.split()
            found.append((name, int(now)))
        return found

    def peak(self) -> int:
        return max((now for _, now in self.lines()), default=0)

    def calls(self) -> Counter[str]:
        return Counter(name for name, _ in self.lines())
