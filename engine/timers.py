"""Timer ids: what is due, and to what. Delayed work and a commit's follow-ups are both timers.

A timer is an id (``<kind>:<ref>``, the ref a job or task id) and a due time, kept in storage and
committed atomically with the change that makes it due. Any engine process claims a due timer for a
lease, carries it out (every handler is idempotent: it looks at the job first) and then deletes it;
a timer whose engine dies before deleting it comes due again when the lease ends, on any engine.

Follow-ups of a commit that concern another job or a worker's connection (resume the parent of a
job that ended, cancel the child of one cancelled, tell a worker to stop a task) are timers due at
once: the outbox of the design, drained by the same scheduler.
"""

from __future__ import annotations

from enum import StrEnum


class TimerKind(StrEnum):
    #: A taken task's deadline: no result by then counts as a transient failure.
    TIMEOUT = "timeout"
    #: A task's worker expired while it ran the task (set with the worker's expiry, due at once).
    LOST = "lost"
    #: A retried task's backoff is over: queue it.
    RETRY_TASK = "retry_task"
    #: A failed handler's backoff is over: run it again.
    RETRY_JOB = "retry_job"
    #: A sub-job ended: its parent moves on (due at once).
    RESUME_PARENT = "resume_parent"
    #: A job waiting for a sub-job was cancelled or failed: cancel the sub-job (due at once).
    CANCEL_JOB = "cancel_job"
    #: A task was withdrawn from the worker running it: ask the worker to stop (due at once).
    CANCEL_TASK = "cancel_task"
    #: A breakpoint was removed (its id the ref): continue the jobs it held (due at once, set with
    #: the removal, so a process dying in between leaves them to another).
    RELEASE_HOLDS = "release_holds"
    #: A bulk action (its id the ref) may operate on its next jobs (see avtomatika.runtime.bulk).
    BULK = "bulk"

    def of(self, ref: str) -> str:
        """The id of this kind's timer for ``ref``."""
        return f"{self}:{ref}"  # a StrEnum formats as its value, without the ``value`` property's call


def parse_timer(timer_id: str) -> tuple[TimerKind | None, str]:
    """The kind (None if unknown) and ref of ``timer_id``."""
    kind, _, ref = timer_id.partition(":")
    try:
        return TimerKind(kind), ref
    except ValueError:
        return None, ref


#: The kinds of a commit's follow-ups: due at once, they wake the scheduler (see Committer).
FOLLOW_UPS = frozenset({TimerKind.RESUME_PARENT, TimerKind.CANCEL_JOB, TimerKind.CANCEL_TASK})
