"""Which worker gets a task: eligibility (task types, resources, cost) and the five strategies.

A task is given to a chosen worker only when one with spare capacity exists; otherwise it waits in
its task type's queue and the first eligible worker that asks takes it. A strategy thus decides
among free workers and never keeps a task waiting while an eligible worker is idle.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from .models import Task, WorkerRecord


def meets_requirements(worker: WorkerRecord, task: Task) -> bool:
    """The worker supports the task's type, its resource requirements and its ``max_cost``."""
    if task.type not in worker.supported_tasks:
        return False
    if task.max_cost is not None and _number(worker.info.get("cost"), 0.0) > task.max_cost:
        return False
    requirements = task.requirements or {}
    return _gpu_ok(worker.info, requirements.get("gpu_info")) and _models_ok(
        worker.info, requirements.get("installed_models")
    )


def _gpu_ok(info: dict[str, Any], wanted: object) -> bool:
    if not isinstance(wanted, dict):
        return True
    resources = info.get("resources") if isinstance(info.get("resources"), dict) else {}
    gpu = resources.get("gpu_info") or info.get("gpu_info") or {}
    if not isinstance(gpu, dict):
        return False
    model = wanted.get("model")
    if model and str(model).lower() not in str(gpu.get("model", "")).lower():
        return False
    vram = wanted.get("vram_gb")
    return not (vram is not None and _number(gpu.get("vram_gb"), 0.0) < _number(vram, 0.0))


def _models_ok(info: dict[str, Any], wanted: object) -> bool:
    if not wanted:
        return True
    installed = {(m.get("name") if isinstance(m, dict) else m) for m in info.get("installed_models") or []}
    names = [(m.get("name") if isinstance(m, dict) else m) for m in wanted] if isinstance(wanted, list) else []
    return all(name in installed for name in names)


def _number(value: object, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


class WorkerChooser:
    """Applies a task's dispatch strategy to the workers that can take it right now."""

    def __init__(self, reputation: Callable[[str], float] | None = None) -> None:
        self._reputation = reputation or (lambda worker_id: 1.0)
        self._round_robin: dict[str, itertools.count[int]] = {}

    def choose(self, task: Task, workers: Sequence[WorkerRecord], load: dict[str, int]) -> str | None:
        """The id of the worker to give ``task`` to, or None to leave it in its queue."""
        free = [w for w in workers if load.get(w.worker_id, 0) < w.max_concurrent_tasks and meets_requirements(w, task)]
        if not free:
            return None
        free.sort(key=lambda w: w.worker_id)
        strategy = task.strategy
        if strategy == "round_robin":
            counter = self._round_robin.setdefault(task.type, itertools.count())
            return free[next(counter) % len(free)].worker_id
        key = self._strategy_key(strategy, task, load)
        return min(free, key=key).worker_id

    def _strategy_key(
        self, strategy: str, task: Task, load: dict[str, int]
    ) -> Callable[[WorkerRecord], tuple[float, ...]]:
        def busy(w: WorkerRecord) -> float:
            return load.get(w.worker_id, 0) / w.max_concurrent_tasks

        if strategy == "least_connections":
            return lambda w: (_number(w.info.get("load"), 0.0), busy(w))
        if strategy == "cheapest":
            return lambda w: (_number(w.info.get("cost_per_second"), 0.0), busy(w))
        if strategy == "best_value":
            return lambda w: (
                _number(w.info.get("cost_per_second"), 0.0) / max(self._reputation(w.worker_id), 1e-6),
                busy(w),
            )
        # default: a worker with the task type hot in cache, then the lowest cost, then the least busy
        return lambda w: (
            0.0 if task.type in (w.info.get("hot_cache") or []) else 1.0,
            _number(w.info.get("cost"), 0.0),
            busy(w),
        )
