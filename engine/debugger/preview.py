"""What the next step of a debugged job would do, before it runs: the handler chosen and its inputs.

The context is the one the engine's runner builds (``initial_data``, ``state_history``, the client,
and in an aggregation state ``aggregation_results`` read from storage), so the handler shown
is the one whose ``.when()`` holds on exactly what the handler will receive, and a breakpoint on an
aggregator shows the branch results it is about to get.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..blueprint import StateMachineBlueprint
from ..engine import OrchestratorEngine
from ..errors import HandlerError
from ..models import Job

#: How ``aggregation_results`` is shaped, shown next to it.
AGGREGATION_SHAPE = '{task_id: {"status": "success", "data": {...}, "task_type": ...}}: the payload is under "data"'


@dataclass(slots=True)
class Preview:
    """The next step, seen before it runs.

    Attributes:
        handler: ``name  (when ...)`` of the handler that would run, or None.
        problem: Why no handler can be chosen (a condition raised, no default handler...), or None.
        inputs: What the handler receives, by name (``aggregation_results`` only in an aggregation state).
    """

    handler: str | None = None
    problem: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)


async def preview(engine: OrchestratorEngine, blueprint: StateMachineBlueprint, job: Job) -> Preview:
    """The handler the next step of ``job`` would run, and what it would receive."""
    context = await engine.runner.handlers.context_for(blueprint, job)
    inputs: dict[str, Any] = {"initial_data": dict(context.initial_data), "state_history": dict(context.state_history)}
    info = blueprint.states.get(job.state)
    if info is not None and info.is_aggregator:
        inputs["aggregation_results"] = context.aggregation_results
    if context.client is not None:
        inputs["client"] = dict(context.client)
    try:
        spec = blueprint.find_handler(job.state, context)
    except HandlerError as exc:  # ConditionFailed included: the engine would quarantine the job with it
        return Preview(problem=str(exc), inputs=inputs)
    shown = spec.name + (f"  (when {spec.condition_text})" if spec.condition_text else "")
    return Preview(handler=shown, inputs=inputs)
