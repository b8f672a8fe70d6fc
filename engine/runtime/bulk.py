"""Bulk actions: one operation (release, retry, fail, cancel, continue, rerun) on many jobs, at a capped rate.

A bulk action is a record in storage (its jobs, its progress) and a timer: each time the timer comes
due, some engine carries out the operation on the next few jobs (as many as the rate allows in
``TICK_S``), records the progress and sets the timer again for when the rate allows more. So a bulk
release of 10,000 jobs at 5 jobs/s queues 5 tasks a second, not 10,000 at once; any engine carries
on with it if the one working on it dies (its timer's lease ends), and it can be cancelled between
two jobs. Each job's operation is the single-job one, named after the bulk action's actor and
carrying its id in the job's history.

A job the operation no longer applies to (released meanwhile, cancelled) is skipped, with the reason
kept for the first ``MAX_PROBLEMS``. If an engine dies after operating on jobs and before recording
it, another does them again: the operation refuses them (they are no longer quarantined...) and they
are counted as skipped, not twice as done.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..errors import AvtomatikaError, BulkNotFound, BulkRefused, InvalidOperation
from ..models import BulkAction, BulkKind, BulkStatus, Job, now

if TYPE_CHECKING:
    from .operations import Operations
    from .rerun import RerunOrigin
    from .shared import Runtime

#: Jobs one bulk action may name.
MAX_JOBS = 10_000
#: Highest rate (jobs per second) a bulk action may ask for.
MAX_RATE = 1000.0
#: How often a bulk action moves on at most: the jobs of one round are ``rate * TICK_S`` (at least 1).
TICK_S = 0.1
#: Where a job's rerun starts (``job_id``, ``state``): the read side's ``Reader.rerun_origin``.
FindOrigin = Callable[[str, str | None], Awaitable["RerunOrigin"]]
#: Names the jobs bulk reruns start: each (bulk action, job) pair always gets the same id.
RERUN_NAMESPACE = uuid.UUID("5d0f4c1e-8a52-4c53-9a43-3f0b7d1e2a61")


def rerun_id(bulk_id: str, job_id: str) -> str:
    """The id of the job a bulk action's rerun of ``job_id`` starts: an engine that takes over a round
    finds a rerun already started by this id and does not start it twice."""
    return str(uuid.uuid5(RERUN_NAMESPACE, f"{bulk_id}/{job_id}"))


class BulkActions:
    """Starts, carries on (from its timer) and cancels bulk actions."""

    def __init__(self, runtime: Runtime, operations: Operations, find_origin: FindOrigin) -> None:
        self.runtime = runtime
        self.operations = operations
        self.find_origin = find_origin

    async def start(
        self, kind: BulkKind | str, job_ids: list[str], *, rate_per_s: float, actor: str, **options: Any
    ) -> BulkAction:
        """Start ``kind`` on ``job_ids`` (in that order, duplicates once) at ``rate_per_s`` jobs a second."""
        try:
            kind = BulkKind(kind)
        except ValueError:
            raise BulkRefused("action", f"unknown action {kind!r}; one of: {', '.join(BulkKind)}") from None
        unique = list(dict.fromkeys(job_ids))
        if not unique:
            raise BulkRefused("job_ids", "no job named")
        if len(unique) > MAX_JOBS:
            raise BulkRefused("job_ids", f"{len(unique)} jobs named; at most {MAX_JOBS} per bulk action")
        if not (0 < rate_per_s <= MAX_RATE) or math.isnan(rate_per_s):
            raise BulkRefused("rate_per_s", f"must be above 0 and at most {MAX_RATE:g}")
        expected = _OPTIONS[kind]
        if unknown := sorted(set(options) - expected):
            takes = ", ".join(sorted(expected)) or "nothing"
            raise BulkRefused(unknown[0], f"{kind} takes no {unknown[0]!r} (it takes: {takes})")
        given = {name: value for name, value in options.items() if value is not None}
        action = BulkAction(kind, len(unique), float(rate_per_s), actor, given)
        await self.runtime.storage.create_bulk(action, unique)
        self.runtime.committer.timers_due.set()
        return action

    async def get(self, bulk_id: str) -> BulkAction:
        action = await self.runtime.storage.get_bulk(bulk_id)
        if action is None:
            raise BulkNotFound(bulk_id)
        return action

    async def cancel(self, bulk_id: str, actor: str) -> BulkAction:
        """Stop a running bulk action before its next job (the jobs done so far stay done)."""
        storage = self.runtime.storage
        while True:
            action = await self.get(bulk_id)
            if action.status != BulkStatus.RUNNING:
                return action
            action.status, action.ended_at, action.cancelled_by = BulkStatus.CANCELLED, now(), actor
            if await storage.save_bulk(action, None):
                return action

    async def step_due(self, bulk_id: str) -> None:
        """The bulk action's timer: operate on its next jobs, record them, set the timer again."""
        storage = self.runtime.storage
        action = await storage.get_bulk(bulk_id)
        if action is None or action.status != BulkStatus.RUNNING:
            return
        batch = max(1, int(action.rate_per_s * TICK_S))
        job_ids = await storage.bulk_jobs(bulk_id, action.handled, batch)
        done, skipped = 0, []
        for job_id in job_ids:
            try:
                await self._operate(action, job_id)
                done += 1
            except (AvtomatikaError, ValidationError) as exc:  # not applicable to this job (any more)
                skipped.append((job_id, exc.reason if isinstance(exc, InvalidOperation) else str(exc)))
        while True:
            action.record(done, skipped, len(job_ids))
            due = now() + len(job_ids) / action.rate_per_s if action.status == BulkStatus.RUNNING else None
            if await storage.save_bulk(action, due):
                return
            stored = await storage.get_bulk(bulk_id)  # cancelled meanwhile: count this round on that
            if stored is None:
                return
            action = stored

    async def _operate(self, action: BulkAction, job_id: str) -> Job:
        operations, actor, options, via = self.operations, action.actor, action.options, {"bulk_id": action.id}
        if action.kind == BulkKind.RELEASE:
            return await operations.release(job_id, actor, options.get("params"), **via)
        if action.kind == BulkKind.RETRY:
            return await operations.retry(job_id, actor, options.get("from_state"), **via)
        if action.kind == BulkKind.FAIL:
            return await operations.fail(job_id, actor, options.get("reason"), **via)
        if action.kind == BulkKind.CANCEL:
            return await operations.cancel(job_id, actor, **via)
        if action.kind == BulkKind.RERUN:
            return await self._rerun(action, job_id)
        return await operations.continue_job(job_id, actor, **via)

    async def _rerun(self, action: BulkAction, job_id: str) -> Job:
        new_id = rerun_id(action.id, job_id)
        if await self.runtime.storage.get_job(new_id) is not None:
            raise InvalidOperation(job_id, f"rerun already, as job {new_id}")
        origin = await self.find_origin(job_id, action.options.get("state"))
        return await self.operations.rerun(origin, action.actor, job_id=new_id, bulk_id=action.id)


_OPTIONS: dict[BulkKind, frozenset[str]] = {
    BulkKind.RELEASE: frozenset({"params"}),
    BulkKind.RETRY: frozenset({"from_state"}),
    BulkKind.FAIL: frozenset({"reason"}),
    BulkKind.CANCEL: frozenset(),
    BulkKind.CONTINUE: frozenset(),
    BulkKind.RERUN: frozenset({"state"}),
}
