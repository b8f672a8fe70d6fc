"""Which worker gets which task: queue order, resource requirements, cost caps and strategies."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support.engine import FakeWorker, started_engine, success, wait_for_status, waiting_tasks

from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.models import Task, WorkerRecord
from avtomatika.runtime.dispatch import WorkerChooser, meets_requirements


def dispatching_blueprint() -> StateMachineBlueprint:
    """One task whose type and dispatch arguments come from the job's initial data."""
    bp = StateMachineBlueprint("dispatching")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        data = context.initial_data
        context.actions.dispatch_task(
            data.get("type", "echo"),
            params={"label": data.get("label")},
            transitions={"success": "end"},
            dispatch_strategy=data.get("strategy", "default"),
            resource_requirements=data.get("requirements"),
            max_cost=data.get("max_cost"),
            priority=data.get("priority", 0),
        )

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    return bp


async def dispatch(engine: OrchestratorEngine, **data: Any) -> Task:
    """Create a job, wait until its task is queued, and return the task."""
    job = await engine.create_job("dispatching", data)
    await wait_for_status(engine, job.id, "waiting_for_worker")
    [task] = await waiting_tasks(engine, job.id)
    return task


async def register(
    engine: OrchestratorEngine, worker_id: str, tasks: list[str] | None = None, **info: Any
) -> FakeWorker:
    return await FakeWorker(engine, worker_id, tasks or ["echo"], **info).register()


# -- queue order -------------------------------------------------------------------------------


async def test_higher_priority_is_served_first() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        for label, priority in [("low", 1), ("high", 9), ("mid", 5)]:
            await dispatch(engine, label=label, priority=priority)
        worker = await register(engine, "w1")
        order = [(await worker.take()).params["label"] for _ in range(3)]
    assert order == ["high", "mid", "low"]


async def test_equal_priorities_are_served_first_in_first_out() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        labels = [f"job{i}" for i in range(6)]
        for label in labels:
            await dispatch(engine, label=label, priority=2)
        worker = await register(engine, "w1")
        order = [(await worker.take()).params["label"] for _ in labels]
    assert order == labels


async def test_priority_applies_across_the_task_types_a_worker_supports() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await dispatch(engine, type="resize", label="resize-low", priority=1)
        await dispatch(engine, type="echo", label="echo-high", priority=7)
        await dispatch(engine, type="resize", label="resize-mid", priority=4)
        worker = await register(engine, "w1", ["echo", "resize"])
        order = [(await worker.take()).params["label"] for _ in range(3)]
    assert order == ["echo-high", "resize-mid", "resize-low"]


async def test_task_goes_only_to_workers_supporting_its_type() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await dispatch(engine, type="resize", label="r")
        echo_only = await register(engine, "echo-only", ["echo"])
        assert await echo_only.poll() is None
        resizer = await register(engine, "resizer", ["resize"])
        assert (await resizer.take()).params["label"] == "r"


# -- resource requirements and cost ------------------------------------------------------------

GPU_4090 = {"resources": {"gpu_info": {"model": "NVIDIA GeForce RTX 4090", "vram_gb": 24}}}
GPU_1080 = {"resources": {"gpu_info": {"model": "NVIDIA GeForce GTX 1080", "vram_gb": 8}}}


@pytest.mark.parametrize(
    "requirements",
    [
        {"gpu_info": {"model": "4090"}},
        {"gpu_info": {"model": "rtx 4090"}},
        {"gpu_info": {"vram_gb": 16}},
        {"gpu_info": {"model": "NVIDIA", "vram_gb": 24}},
    ],
    ids=["model-substring", "model-any-case", "vram-minimum", "model-and-vram"],
)
async def test_gpu_requirement_is_met_only_by_a_matching_worker(requirements: dict[str, Any]) -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await dispatch(engine, label="gpu", requirements=requirements)
        small = await register(engine, "small-gpu", **GPU_1080)
        no_gpu = await register(engine, "no-gpu")
        assert await small.poll() is None
        assert await no_gpu.poll() is None
        big = await register(engine, "big-gpu", **GPU_4090)
        assert (await big.take()).params["label"] == "gpu"


async def test_installed_models_must_all_be_present() -> None:
    models = [{"name": "whisper", "version": "3"}, {"name": "sdxl", "version": "1.0"}]
    async with started_engine(dispatching_blueprint()) as engine:
        await dispatch(engine, label="m", requirements={"installed_models": ["whisper", "sdxl"]})
        partial = await register(engine, "partial", installed_models=models[:1])
        assert await partial.poll() is None
        complete = await register(engine, "complete", installed_models=models)
        assert (await complete.take()).params["label"] == "m"


async def test_requirements_guide_the_choice_among_free_workers() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await register(engine, "a-small", **GPU_1080)
        await register(engine, "b-big", **GPU_4090)
        task = await dispatch(engine, requirements={"gpu_info": {"vram_gb": 20}})
    assert task.worker_id == "b-big"


async def test_max_cost_excludes_pricier_workers() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await dispatch(engine, label="budget", max_cost=1.0)
        pricey = await register(engine, "pricey", cost_per_second=2.5)
        unpriced = await register(engine, "unpriced")
        assert await pricey.poll() is None
        assert await unpriced.poll() is None  # it cannot be shown to be cheap enough
        thrifty = await register(engine, "thrifty", cost_per_second=0.5)
        assert (await thrifty.take()).params["label"] == "budget"


async def test_max_cost_falls_back_to_the_cost_field() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await register(engine, "a-pricey", cost=3)
        await register(engine, "b-cheap", cost=1)
        task = await dispatch(engine, max_cost=2)
    assert task.worker_id == "b-cheap"


# -- strategies --------------------------------------------------------------------------------

ROOMY = {"max_concurrent_tasks": 10}


async def test_default_prefers_a_worker_with_the_task_hot_in_cache() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await register(engine, "a-cheap", cost=1)
        await register(engine, "b-hot", cost=5, hot_cache=["echo"])
        await register(engine, "c-hot-other", cost=0.5, hot_cache=["resize"])
        task = await dispatch(engine)
        hot = FakeWorker(engine, "b-hot")
        assert (await hot.take()).id == task.id
    assert task.worker_id == "b-hot"


async def test_default_understands_the_sdk_hot_skills_field() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await register(engine, "a-cheap", cost=1)
        await register(engine, "b-warm", cost=5, hot_skills=["echo"])
        task = await dispatch(engine)
    assert task.worker_id == "b-warm"


async def test_default_without_hot_cache_takes_the_lowest_cost() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await register(engine, "a", cost=3)
        await register(engine, "b", cost=1)
        await register(engine, "c", cost=2)
        await register(engine, "d")  # no cost declared: not preferred
        task = await dispatch(engine)
    assert task.worker_id == "b"


async def test_round_robin_rotates_over_the_free_workers() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        for worker_id in ("w1", "w2", "w3"):
            await register(engine, worker_id, **ROOMY)
        chosen = [(await dispatch(engine, strategy="round_robin")).worker_id for _ in range(6)]
    assert sorted(chosen[:3]) == ["w1", "w2", "w3"]
    assert chosen[3:] == chosen[:3]


async def test_least_connections_takes_the_lowest_load() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await register(engine, "a", load=3, **ROOMY)
        await register(engine, "b", load=0, **ROOMY)
        await register(engine, "c", load=7, **ROOMY)
        task = await dispatch(engine, strategy="least_connections")
        assert task.worker_id == "b"
        await engine.heartbeat("b", {"load": 9})
        await engine.heartbeat("a", {"load": 1})
        again = await dispatch(engine, strategy="least_connections")
    assert again.worker_id == "a"


async def test_cheapest_takes_the_lowest_cost_per_second() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await register(engine, "a", cost_per_second=0.3)
        await register(engine, "b", cost_per_second=0.1)
        await register(engine, "c", cost_per_second=0.2)
        await register(engine, "d")
        task = await dispatch(engine, strategy="cheapest")
    assert task.worker_id == "b"


async def test_best_value_divides_cost_per_second_by_reputation() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await register(engine, "a", cost_per_second=1.0, reputation=1.0)  # 1.0
        await register(engine, "b", cost_per_second=1.5, reputation=3.0)  # 0.5
        await register(engine, "c", cost_per_second=0.8, reputation=0.5)  # 1.6, but the cheapest
        best = await dispatch(engine, strategy="best_value")
        cheapest = await dispatch(engine, strategy="cheapest")
    assert best.worker_id == "b"
    assert cheapest.worker_id == "c"


async def test_busy_worker_is_passed_over_for_a_free_one() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        preferred = await register(engine, "a-preferred", cost=1)
        await register(engine, "b-other", cost=9)
        first = await dispatch(engine, label="first")
        assert first.worker_id == "a-preferred"
        await preferred.take()  # now at its capacity of one
        second = await dispatch(engine, label="second")
    assert second.worker_id == "b-other"


async def test_no_free_worker_leaves_the_task_in_its_queue_for_the_first_to_ask() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        a = await register(engine, "a")
        first = await dispatch(engine, label="first")
        assert first.worker_id == "a"
        second = await dispatch(engine, label="second")
        assert second.worker_id is None
        b = await register(engine, "b")
        assert (await b.take()).params["label"] == "second"
        assert (await a.take()).params["label"] == "first"


async def test_idle_worker_is_not_kept_waiting_while_the_chosen_one_does_not_poll() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        engine.storage.steal_after_s = 0.1
        await register(engine, "a-chosen", cost=1)
        idle = await register(engine, "b-idle", cost=2)
        task = await dispatch(engine, label="x")
        assert task.worker_id == "a-chosen"
        taken = await idle.poll(5.0)
        assert taken is not None
        assert taken.id == task.id
        await idle.answer(taken, success())


# -- the chooser on its own --------------------------------------------------------------------


def record(worker_id: str, ttl_s: float = 60.0, **info: Any) -> WorkerRecord:
    at = time.time()
    return WorkerRecord(worker_id, {"worker_id": worker_id, "supported_tasks": ["echo"], **info}, at, at, at + ttl_s)


def test_expired_worker_is_never_chosen_even_from_a_stale_list() -> None:
    chooser = WorkerChooser()
    task = Task("t1", "j1", "echo")
    workers = [record("a-dead", ttl_s=-1, cost=0), record("b-alive", cost=5)]
    assert chooser.choose(task, workers, {}) == "b-alive"
    assert chooser.choose(task, workers[:1], {}) is None


def test_worker_at_capacity_is_not_chosen() -> None:
    chooser = WorkerChooser()
    task = Task("t1", "j1", "echo")
    workers = [record("a", max_concurrent_tasks=2, cost=0), record("b", cost=5)]
    assert chooser.choose(task, workers, {"a": 1}) == "a"
    assert chooser.choose(task, workers, {"a": 2}) == "b"
    assert chooser.choose(task, workers, {"a": 2, "b": 1}) is None


def test_worker_reporting_itself_busy_is_not_chosen() -> None:
    chooser = WorkerChooser()
    task = Task("t1", "j1", "echo")
    workers = [record("a-busy", status="busy", cost=0), record("b-idle", status="idle", cost=5)]
    assert chooser.choose(task, workers, {}) == "b-idle"


def test_worker_reporting_no_supported_tasks_is_not_eligible() -> None:
    busy = record("sdk-busy", supported_tasks=[])
    assert not meets_requirements(busy, Task("t1", "j1", "echo"))


def test_gpu_requirement_reads_gpu_info_at_the_top_level_too() -> None:
    worker = record("flat", gpu_info={"model": "A100", "vram_gb": 80})
    assert meets_requirements(worker, Task("t", "j", "echo", requirements={"gpu_info": {"model": "a100"}}))
    assert not meets_requirements(worker, Task("t", "j", "echo", requirements={"gpu_info": {"vram_gb": 96}}))


async def test_dispatched_task_is_taken_by_the_chosen_worker_and_the_job_finishes() -> None:
    async with started_engine(dispatching_blueprint()) as engine:
        await register(engine, "a", cost_per_second=0.9)
        cheap = await register(engine, "b", cost_per_second=0.1)
        task = await dispatch(engine, strategy="cheapest")
        await cheap.answer(await cheap.take(), success())
        await wait_for_status(engine, task.job_id, "finished")
