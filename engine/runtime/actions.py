"""What a handler asks the engine to do next. Exactly one kind of action per step.

Calling ``dispatch_task`` several times in one handler is one action (a fan-out); mixing kinds,
or calling ``transition_to`` twice, raises :class:`~avtomatika.errors.HandlerError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import HandlerError

STRATEGIES = frozenset({"default", "round_robin", "least_connections", "cheapest", "best_value"})


@dataclass(slots=True, frozen=True)
class TaskSpec:
    """One task a handler dispatched, before the engine gives it an id."""

    task_type: str
    params: dict[str, Any]
    transitions: dict[str, str]
    strategy: str = "default"
    requirements: dict[str, Any] | None = None
    timeout_s: float | None = None
    max_cost: float | None = None
    priority: float = 0.0


@dataclass(slots=True, frozen=True)
class Transition:
    target: str


@dataclass(slots=True, frozen=True)
class Dispatch:
    tasks: tuple[TaskSpec, ...]
    aggregate_into: str | None = None


@dataclass(slots=True, frozen=True)
class HumanApproval:
    integration: str
    message: str
    transitions: dict[str, str]


@dataclass(slots=True, frozen=True)
class RunBlueprint:
    blueprint_name: str
    initial_data: dict[str, Any]
    transitions: dict[str, str]


Action = Transition | Dispatch | HumanApproval | RunBlueprint


class ActionFactory:
    """The ``context.actions`` object: records the one action a handler takes."""

    __slots__ = ("_aggregate_into", "_fanning_out", "_kind", "_other", "_tasks", "_transition", "blueprint", "state")

    def __init__(self, blueprint: str, state: str) -> None:
        self.blueprint = blueprint
        self.state = state
        self._kind: str | None = None
        self._transition: str | None = None
        self._tasks: list[TaskSpec] = []
        self._aggregate_into: str | None = None
        self._other: HumanApproval | RunBlueprint | None = None
        self._fanning_out = False

    def transition_to(self, state: str) -> None:
        """Move the job to ``state``."""
        self._claim("transition_to", repeatable=False)
        self._transition = _name(self, "state", state)

    def dispatch_task(
        self,
        task_type: str,
        params: dict[str, Any] | None = None,
        transitions: dict[str, str] | None = None,
        dispatch_strategy: str = "default",
        resource_requirements: dict[str, Any] | None = None,
        timeout_seconds: float | None = None,
        max_cost: float | None = None,
        priority: float = 0.0,
    ) -> None:
        """Queue a task for a worker; the result's status picks the next state from ``transitions``.

        Several calls in one handler fan out; all their ``success`` transitions must lead to one
        aggregation state, whose handler then sees every result in ``context.aggregation_results``.
        """
        if not self._fanning_out:  # dispatch_parallel claimed the step for all its tasks
            self._claim("dispatch_task", repeatable=True)
        if params is not None and not isinstance(params, dict):
            raise HandlerError(self.blueprint, self.state, "dispatch_task params must be a dict")
        if dispatch_strategy not in STRATEGIES:
            raise HandlerError(
                self.blueprint,
                self.state,
                f"unknown dispatch_strategy {dispatch_strategy!r}; use one of {sorted(STRATEGIES)}",
            )
        _check_requirements(self, resource_requirements)
        if timeout_seconds is not None and (not _is_number(timeout_seconds) or timeout_seconds <= 0):
            raise HandlerError(self.blueprint, self.state, "timeout_seconds must be a positive number")
        if max_cost is not None and (not _is_number(max_cost) or max_cost < 0):
            raise HandlerError(self.blueprint, self.state, "max_cost must be a number, zero or more")
        if not _is_number(priority):
            raise HandlerError(self.blueprint, self.state, "priority must be a finite number")
        routes = _transitions(self, transitions)
        if not routes:  # every answer would fail the job as "unhandled status": say so now
            raise HandlerError(
                self.blueprint, self.state, "dispatch_task needs transitions, e.g. {'success': 'next_state'}"
            )
        self._tasks.append(
            TaskSpec(
                _name(self, "task_type", task_type),
                dict(params or {}),
                routes,
                dispatch_strategy,
                resource_requirements,
                timeout_seconds,
                max_cost,
                float(priority),
            )
        )

    def dispatch_parallel(self, tasks: list[dict[str, Any]], aggregate_into: str) -> None:
        """Fan out ``tasks`` and aggregate in ``aggregate_into``.

        Each task is a dict of ``dispatch_task`` arguments; its type may be given as ``"type"`` (the
        original's format, the key a worker receives it under) or as ``"task_type"``.
        """
        self._claim("dispatch_parallel", repeatable=False)
        target = _name(self, "aggregate_into", aggregate_into)
        if not isinstance(tasks, list | tuple) or not tasks:
            raise HandlerError(self.blueprint, self.state, "dispatch_parallel needs a non-empty list of tasks")
        self._fanning_out = True
        try:
            for index, task in enumerate(tasks):
                self._fan_out_one(index, task, target)
        finally:
            self._fanning_out = False
        self._aggregate_into = target

    def _fan_out_one(self, index: int, task: object, target: str) -> None:
        if not isinstance(task, dict):
            raise HandlerError(self.blueprint, self.state, f"dispatch_parallel task #{index} is not a dict")
        arguments = self._parallel_arguments(index, task)
        transitions = _transitions(self, arguments.get("transitions"))
        if transitions.setdefault("success", target) != target:
            raise self._parallel_error(
                index,
                f"its 'success' transition must be the aggregation state '{target}', not '{transitions['success']}'",
            )
        arguments["transitions"] = transitions
        try:
            self.dispatch_task(**arguments)
        except TypeError as exc:
            raise self._parallel_error(index, str(exc)) from None

    def _parallel_arguments(self, index: int, task: dict[str, Any]) -> dict[str, Any]:
        """A ``dispatch_parallel`` task's ``dispatch_task`` arguments, ``"type"`` read as ``task_type``."""
        arguments = dict(task)
        if "type" in arguments:
            task_type = arguments.pop("type")
            if arguments.setdefault("task_type", task_type) != task_type:
                raise self._parallel_error(
                    index, f"names its type twice: type={task_type!r}, task_type={arguments['task_type']!r}"
                )
        return arguments

    def _parallel_error(self, index: int, problem: str) -> HandlerError:
        return HandlerError(self.blueprint, self.state, f"dispatch_parallel task #{index}: {problem}")

    def await_human_approval(self, integration: str, message: str, transitions: dict[str, str]) -> None:
        """Pause until someone answers ``POST /_public/webhooks/approval/{job_id}`` with a decision."""
        self._claim("await_human_approval", repeatable=False)
        decisions = _transitions(self, transitions)
        if not decisions:
            raise HandlerError(
                self.blueprint, self.state, "await_human_approval needs transitions: decision name -> state name"
            )
        self._other = HumanApproval(str(integration), str(message), decisions)

    def run_blueprint(
        self,
        blueprint_name: str,
        initial_data: dict[str, Any] | None = None,
        transitions: dict[str, str] | None = None,
    ) -> None:
        """Start a child job; this job resumes with ``success`` or ``failure`` when the child ends."""
        self._claim("run_blueprint", repeatable=False)
        if initial_data is not None and not isinstance(initial_data, dict):
            raise HandlerError(self.blueprint, self.state, "run_blueprint initial_data must be a dict")
        self._other = RunBlueprint(
            _name(self, "blueprint_name", blueprint_name),
            dict(initial_data or {}),
            _transitions(self, transitions),
        )

    def result(self) -> Action | None:
        """The action taken, or None when the handler took none."""
        if self._transition is not None:
            return Transition(self._transition)
        if self._tasks:
            return Dispatch(tuple(self._tasks), self._aggregate_into)
        return self._other

    def _claim(self, kind: str, *, repeatable: bool) -> None:
        if self._kind is None:
            self._kind = kind
            return
        if self._kind == kind and repeatable:
            return
        raise HandlerError(
            self.blueprint,
            self.state,
            f"a handler may take one kind of action per step, but it called {self._kind}() and then {kind}()",
        )


def _is_number(value: object) -> bool:
    """A finite int or float, not a bool (NaN would break queue and timer ordering)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_requirements(actions: ActionFactory, requirements: object) -> None:
    """``{"gpu_info": {"model": str, "vram_gb": number}, "installed_models": [name or {"name"}]}``."""
    if requirements is None:
        return

    def bad(reason: str) -> HandlerError:
        return HandlerError(actions.blueprint, actions.state, f"resource_requirements: {reason}")

    if not isinstance(requirements, dict):
        raise bad("must be a dict")
    gpu = requirements.get("gpu_info")
    if gpu is not None:
        if not isinstance(gpu, dict):
            raise bad("gpu_info must be a dict")
        if gpu.get("model") is not None and not isinstance(gpu["model"], str):
            raise bad("gpu_info.model must be a string")
        if gpu.get("vram_gb") is not None and (not _is_number(gpu["vram_gb"]) or gpu["vram_gb"] < 0):
            raise bad("gpu_info.vram_gb must be a number, zero or more")
    models = requirements.get("installed_models")
    if models is not None and (
        not isinstance(models, list)
        or not all(isinstance(m, str) or (isinstance(m, dict) and isinstance(m.get("name"), str)) for m in models)
    ):
        raise bad("installed_models must be a list of model names")


def _name(actions: ActionFactory, label: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise HandlerError(actions.blueprint, actions.state, f"{label} must be a non-empty string, not {value!r}")
    return value


def _transitions(actions: ActionFactory, transitions: object) -> dict[str, str]:
    if transitions is None:
        return {}
    if not isinstance(transitions, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in transitions.items()
    ):
        raise HandlerError(actions.blueprint, actions.state, "transitions must be a dict of status name -> state name")
    return dict(transitions)
