"""A task taken for a worker whose long poll hung up goes back to the queue."""

from __future__ import annotations

from support.blueprints import one_task_blueprint
from support.engine import started_engine, wait_for_status

from avtomatika.models import TaskStatus


async def test_given_back_task_goes_to_the_next_worker():
    async with started_engine(one_task_blueprint("give_back")) as engine:
        job = await engine.create_job("give_back", {})
        await engine.register_worker({"worker_id": "gone", "supported_tasks": ["echo"]})
        task = await engine.next_task("gone", 5)
        assert task is not None

        await engine.give_back(task)

        stored = await engine.storage.get_task(task.id)
        assert stored.status == TaskStatus.QUEUED
        assert stored.worker_id is None
        assert await engine.storage.next_timer_at() is None  # no timeout left behind
        await engine.register_worker({"worker_id": "next", "supported_tasks": ["echo"]})
        again = await engine.next_task("next", 5)
        assert again is not None
        assert again.id == task.id
        await engine.submit_result(job.id, again.id, "next", {"status": "success"})
        await wait_for_status(engine, job.id, "finished")


async def test_giving_back_an_answered_task_changes_nothing():
    async with started_engine(one_task_blueprint("give_back")) as engine:
        job = await engine.create_job("give_back", {})
        await engine.register_worker({"worker_id": "w", "supported_tasks": ["echo"]})
        task = await engine.next_task("w", 5)
        await engine.submit_result(job.id, task.id, "w", {"status": "success"})
        await wait_for_status(engine, job.id, "finished")
        await engine.give_back(task)
        assert (await engine.storage.get_task(task.id)).status == TaskStatus.DONE
