"""Workers: long-lived tasks of a task group that run short jobs, such as one tool call each.

Starting a task per job is what a task group is for, and it is what a tool call of a stream
did; but anyio's ``start_soon`` costs about four hand-overs here (a measured 22-29 us a task,
against 5 us to hand a job to a waiting task), and a tool call crosses two of them on its way
through a server and an agent. So a session keeps the tasks that finished a job, waiting for
the next, and starts a new one only when every worker is busy: a job never waits behind
another (a slow tool holds up nothing), and the tasks are still the task group's own.

At most :data:`KEEP` workers wait idle; a worker that finishes a job with that many idle
already ends. How many jobs run at once is the caller's bound (the pending-call limits).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import anyio
from anyio.abc import TaskGroup

from ._lane import Lane

__all__ = ["KEEP", "Workers"]

KEEP: Final = 8
"""The most idle workers kept waiting for jobs."""

Job = Callable[[], Awaitable[None]]


class Workers:
    """Runs each submitted job at once, in a waiting worker or in a new one (see the module)."""

    __slots__ = ("_idle", "_jobs", "_tg")

    def __init__(self, tg: TaskGroup) -> None:
        self._tg = tg
        # Never full: every job on it has a worker reserved for it (see submit).
        self._jobs = Lane[Job](1 << 30)
        self._idle = 0  # workers waiting on the lane, less the jobs already promised to them

    def submit(self, job: Job) -> None:
        """Run ``job`` without waiting for any other job. Its exceptions are the task group's."""
        if self._idle:
            self._idle -= 1  # a waiting worker is this job's
        else:
            self._tg.start_soon(self._work)
        self._jobs.send_nowait(job)

    def close(self) -> None:
        """Let idle workers end; jobs already submitted still run."""
        self._jobs.close()

    async def _work(self) -> None:
        jobs = self._jobs
        while True:
            try:
                job = await jobs.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return
            await job()
            if self._idle >= KEEP:
                return
            self._idle += 1
