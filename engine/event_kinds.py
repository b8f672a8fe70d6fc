"""The kinds of the engine's events, in a module of their own: history's SQLite process reads them.

:mod:`avtomatika.events` re-exports :class:`EventKind`; import it from there. This module imports
nothing of the engine (nor asyncio), so the process that writes SQLite history
(:mod:`avtomatika.history.sqlite_process`) starts without the engine's imports.
"""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    JOB_CREATED = "job_created"
    STATE_ENTERED = "state_entered"
    STEP_FINISHED = "step_finished"
    TASK_DISPATCHED = "task_dispatched"
    TASK_TAKEN = "task_taken"
    TASK_PROGRESS = "task_progress"
    TASK_RESULT = "task_result"
    TASK_RETRY = "task_retry"
    HANDLER_RETRY = "handler_retry"
    JOB_WAITING = "job_waiting"
    JOB_QUARANTINED = "job_quarantined"
    JOB_RELEASED = "job_released"
    JOB_RETRIED = "job_retried"
    JOB_HELD = "job_held"
    JOB_CONTINUED = "job_continued"
    JOB_RERUN = "job_rerun"
    JOB_FINISHED = "job_finished"
    JOB_FAILED = "job_failed"
    JOB_CANCELLED = "job_cancelled"
    WORKER_REGISTERED = "worker_registered"
    WORKER_EXPIRED = "worker_expired"
