"""Which worker gets a task: eligibility (task types, resources, cost) and the five strategies.

A task is given to a chosen worker (its inbox) only when one with spare capacity exists; otherwise
it waits in its task type's queue and the first eligible worker that asks takes it. A strategy thus
decides among free workers (alive, not reporting ``status: "busy"``, below ``max_concurrent_tasks``).
A task in a worker's inbox waits for that worker to ask; one left there longer than the storage's
``steal_after_s`` is taken by another idle worker that can run it, and the tasks of a worker that
expires are queued again.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..models import Task, WorkerRecord


def meets_requirements(worker: WorkerRecord, task: Task) -> bool:
    """The worker supports the task's type, its resource requirements and its ``max_cost``.

    ``max_cost`` is compared with the worker's ``cost_per_second`` (its ``cost`` when it declares no
    ``cost_per_second``); a worker that declares neither cannot be shown to be cheap enough.
    """
    supported = worker.info.get("supported_tasks")
    # A task type is a str, so it is in the list only as one of its str items (WorkerRecord.supported_tasks).
    if not isinstance(supported, list) or task.type not in supported:
        return False
    if task.max_cost is not None and _price(worker.info) > task.max_cost:
        return False
    requirements = task.requirements
    if not requirements:
        return True
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


def _price(info: dict[str, Any]) -> float:
    return _number(info.get("cost_per_second"), _number(info.get("cost"), math.inf))


def _is_hot(info: dict[str, Any], task_type: str) -> bool:
    """The task type is warm on the worker: in ``hot_cache`` or, as the worker SDK reports it, ``hot_skills``."""
    return any(task_type in (info.get(key) or []) for key in ("hot_cache", "hot_skills"))


def _has_room(worker: WorkerRecord, at: float, load: dict[str, int]) -> bool:
    """The worker is alive, not reporting ``status: "busy"``, and below its ``max_concurrent_tasks``."""
    return (
        worker.alive(at)
        and worker.info.get("status") != "busy"
        and load.get(worker.worker_id, 0) < worker.max_concurrent_tasks
    )


def _info_reputation(worker: WorkerRecord) -> float:
    return _number(worker.info.get("reputation"), 1.0)


class WorkerChooser:
    """Applies a task's dispatch strategy to the workers that can take it right now."""

    def __init__(self, reputation: Callable[[WorkerRecord], float] | None = None) -> None:
        self._reputation = reputation or _info_reputation
        self._round_robin: dict[str, itertools.count[int]] = {}

    def assign(self, tasks: Sequence[Task], workers: Sequence[WorkerRecord], load: dict[str, int]) -> None:
        """Set each task's ``worker_id`` to the worker :meth:`choose` picks for it (None: its queue).

        ``load`` counts each choice. The workers with room are found once: a fan-out of hundreds of
        tasks, most of them left in their queue once every worker is full, does not look at every
        worker for each of them.
        """
        at = time.time()
        free = [w for w in workers if _has_room(w, at, load)]
        for task in tasks:
            worker_id = self.choose(task, free, load) if free else None
            task.worker_id = worker_id
            if worker_id is not None:
                load[worker_id] = load.get(worker_id, 0) + 1
                free = [w for w in free if w.worker_id != worker_id or _has_room(w, at, load)]

    def choose(self, task: Task, workers: Sequence[WorkerRecord], load: dict[str, int]) -> str | None:
        """The id of the worker to give ``task`` to, or None to leave it in its queue.

        ``workers`` may be a slightly old list: one that has expired since is never chosen (its inbox
        would never be read again). A worker that reports ``status: "busy"`` is not free either.
        """
        at = time.time()
        free = [w for w in workers if _has_room(w, at, load) and meets_requirements(w, task)]
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

        # An undeclared price ranks last (math.inf): a worker is not preferred for a cost it never stated.
        if strategy == "least_connections":
            return lambda w: (_number(w.info.get("load"), 0.0), busy(w))
        if strategy == "cheapest":
            return lambda w: (_number(w.info.get("cost_per_second"), math.inf), busy(w))
        if strategy == "best_value":
            return lambda w: (self._value(w), busy(w))
        # default: a worker with the task type hot in cache, then the lowest cost, then the least busy
        return lambda w: (
            0.0 if _is_hot(w.info, task.type) else 1.0,
            _number(w.info.get("cost"), math.inf),
            busy(w),
        )

    def _value(self, worker: WorkerRecord) -> float:
        """``cost_per_second / reputation``: lower is better; no reputation (0 or less) ranks last."""
        reputation = self._reputation(worker)
        cost = _number(worker.info.get("cost_per_second"), math.inf)
        return cost / reputation if reputation > 0 else math.inf
