"""The committer: every change to a job is one atomic storage change, then its events on the bus.

A :class:`~avtomatika.storage.Commit` carries everything that must follow from a change (tasks,
timers, sub-jobs, follow-ups as timers due at once, history lines), so applying it is one write that
either lands whole or not at all. After it lands, its events are published to this process's
subscribers (the studio, metrics, widgets) and, with Redis, to the other engines; history reads
them from storage's feed, where they were written with the change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ..errors import InvalidOperation, JobNotFound, VersionConflict
from ..events import Event, EventBus
from ..models import Job
from ..storage import Commit, Storage
from ..timers import FOLLOW_UPS, parse_timer

#: How many times a change is recomputed when the job changed under it before giving up.
MAX_CONFLICT_RETRIES = 50

#: What builds a change from the job as read: a commit, or None for no change.
Build = Callable[[Job], Awaitable[Commit | None]]


class Committer:
    """Applies commits to ``storage`` and publishes their events on ``events``.

    ``timers_due`` is set when a commit sets a follow-up (a timer due at once, see
    :data:`~avtomatika.timers.FOLLOW_UPS`): the scheduler waits on it, so follow-ups are carried out
    without waiting for its next look at the timers.
    """

    def __init__(self, storage: Storage, events: EventBus) -> None:
        self.storage = storage
        self.events = events
        self.timers_due = asyncio.Event()

    async def create_job(self, job: Job, events: Sequence[Event]) -> Job:
        """Store a new job with the events of its creation, queued to run."""
        created = await self.storage.create_job(job, events=events)
        for event in events:
            self.events.publish(event)
        return created

    async def apply(self, commit: Commit) -> Job:
        """Commit atomically (VersionConflict if the job changed since it was read), then publish."""
        job = commit.job
        for event in commit.events:
            if event.status is None and event.job_id == job.id:  # a worker's result: the status it led to
                event.status = job.status
        job = await self.storage.commit(commit)
        self._publish(commit)
        return job

    async def update_job(self, job_id: str, build: Build) -> Job:
        """Read the job, build a commit from it, apply it; again from a fresh read on a conflict."""
        for _ in range(MAX_CONFLICT_RETRIES):
            job = await self.storage.get_job(job_id)
            if job is None:
                raise JobNotFound(job_id)
            commit = await build(job)
            if commit is None:
                return job
            try:
                return await self.apply(commit)
            except VersionConflict:
                continue
        raise InvalidOperation(job_id, "the job kept changing; try again")

    def _publish(self, commit: Commit) -> None:
        for event in commit.events:
            self.events.publish(event)
        if any(parse_timer(timer_id)[0] in FOLLOW_UPS for timer_id in commit.timers):
            self.timers_due.set()
