"""Workers: jobs run at once, never behind each other, in tasks that are kept and reused."""

from __future__ import annotations

import anyio
import pytest

from loom.bridge._workers import KEEP, Workers

pytestmark = pytest.mark.anyio


async def test_a_job_never_waits_behind_a_slow_one_and_idle_workers_are_reused() -> None:
    release = anyio.Event()
    done: list[str] = []
    tasks: list[int] = []

    async def slow() -> None:
        await release.wait()
        done.append("slow")

    async def quick() -> None:
        tasks.append(anyio.get_current_task().id)
        done.append("quick")

    async with anyio.create_task_group() as tg:
        workers = Workers(tg)
        workers.submit(slow)
        workers.submit(quick)  # the slow job's worker is busy: a second one runs this
        await anyio.wait_all_tasks_blocked()
        assert done == ["quick"]
        for _ in range(3):  # one after the other: the idle worker takes each
            workers.submit(quick)
            await anyio.wait_all_tasks_blocked()
        assert len(set(tasks)) == 1
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert done == ["quick", "quick", "quick", "quick", "slow"]
        workers.close()  # the idle workers end, and with them the task group


async def test_at_most_keep_workers_wait_idle() -> None:
    release = anyio.Event()

    async def job() -> None:
        await release.wait()

    async with anyio.create_task_group() as tg:
        before = len(anyio.get_running_tasks())
        workers = Workers(tg)
        for _ in range(KEEP + 5):
            workers.submit(job)
        await anyio.wait_all_tasks_blocked()
        assert len(anyio.get_running_tasks()) - before == KEEP + 5  # one worker per job
        release.set()
        await anyio.wait_all_tasks_blocked()
        assert len(anyio.get_running_tasks()) - before == KEEP
        workers.close()


async def test_a_failing_job_is_the_task_groups_error() -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            Workers(tg).submit(boom)
    assert info.group_contains(RuntimeError, match="boom")
