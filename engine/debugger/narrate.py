"""The debugger's log in words: what a step did, what changed the job from outside, why it cannot step."""

from __future__ import annotations

import json
from typing import Any

from ..events import Event, EventKind
from ..models import RUNNABLE_STATUSES, WAITING_ON_TASKS, Job, JobStatus, Task
from ..storage import Commit


def which(task: Task, still_open: list[Task]) -> str:
    """`` (1 of 3)`` for a fan-out branch, empty for a lone task."""
    if not task.aggregate_into:
        return ""
    return f" ({task.id[:8]}, {len(still_open)} still open)"


def steppable(job: Job) -> bool:
    return job.status in RUNNABLE_STATUSES or (
        job.status == JobStatus.AWAITING_RETRY and (job.wait or {}).get("kind") == "retry"
    )


def why_not(job: Job) -> str:
    if job.status in WAITING_ON_TASKS:
        return "answer its task (or let a worker do it)"
    if job.status == JobStatus.WAITING_FOR_HUMAN:
        return "it waits for an approval decision"
    if job.status == JobStatus.QUARANTINED:
        return "release it, or go back to an earlier step"
    return "go back to an earlier step to run it again"


def error_of(commit: Commit) -> tuple[str | None, str | None]:
    for item in commit.events:
        if item.kind in (EventKind.HANDLER_RETRY, EventKind.JOB_QUARANTINED, EventKind.JOB_FAILED):
            error = item.data.get("error")
            return (str(error) if error else None), item.data.get("traceback")
    return None, None


def describe(commit: Commit, before: Job) -> str:
    """The action a step took, in words, from its commit."""
    job = commit.job
    tasks = list(commit.tasks)
    if tasks:
        listed = "; ".join(f"{t.type!r} params={short(t.params, 50)} transitions={short(t.transitions)}" for t in tasks)
        verb = "dispatch_parallel" if len(tasks) > 1 else "dispatch_task"
        return f"{verb}: {listed}"
    kinds = {e.kind: e for e in commit.events}
    if EventKind.HANDLER_RETRY in kinds:
        data = kinds[EventKind.HANDLER_RETRY].data
        return f"the handler raised (attempt {data.get('attempt')}; the job awaits a retry)"
    if EventKind.STATE_ENTERED in kinds:
        return f"transition_to({job.state!r})"
    if EventKind.JOB_FINISHED in kinds:
        return "finished (end state)"
    if EventKind.JOB_WAITING in kinds:
        waiting = kinds[EventKind.JOB_WAITING].data
        if waiting.get("waiting_for") == "human":
            decisions = sorted((job.wait or {}).get("transitions", {}))
            return f"await_human_approval: {waiting.get('message')!r}, decisions {decisions}"
        return f"run_blueprint: sub-job {waiting.get('child_job_id')}"
    if job.status != before.status:
        return f"{job.status}: {job.error}"
    return "no change"


def outside_action(before: Job, after: Job, events: list[Event]) -> str:
    """What changed the job outside the debugger, from the events published since it was last seen."""
    since = [e for e in events if e.at >= before.updated_at]
    for item in reversed(since):
        data = item.data
        if item.kind == EventKind.TASK_RESULT:
            by = data.get("worker_id") or "a worker"
            return f"{by} answered task {data.get('task_type')!r}: {short(data.get('result'), 80)}"
        if item.kind == EventKind.TASK_DISPATCHED:
            return f"task {data.get('task_type')!r} dispatched again (attempt {data.get('attempt')})"
        if item.kind in (EventKind.JOB_CANCELLED, EventKind.JOB_RETRIED, EventKind.JOB_RELEASED, EventKind.JOB_FAILED):
            return f"{item.kind.replace('job_', '')} by {data.get('actor') or 'someone else'}"
    if before.status == JobStatus.AWAITING_RETRY and after.status == JobStatus.RUNNING:
        return "the retry backoff is over: the handler can run again"
    if after.state != before.state:
        return f"moved to {after.state!r} from outside the debugger"
    return f"became {after.status} from outside the debugger"


def short(value: Any, width: int = 60) -> str:
    """A value as compact JSON, cut to ``width`` characters."""
    return clip(json.dumps(value, ensure_ascii=False, sort_keys=True, default=str), width)


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis when cut."""
    return text if len(text) <= width else text[: width - 1] + "\N{HORIZONTAL ELLIPSIS}"
