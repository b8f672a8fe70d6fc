"""Rerun: a new job started at a chosen state of an old one, with its data as it was there.

The new job is of the same blueprint and client; it starts at ``state`` with the ``initial_data`` and
``state_history`` the old job had when it entered that state (its last visit there, or the one
named), rebuilt from the old job's timeline in history, and edited if the operator wants. The old job
is left as it is; each links to the other in history (the new job's ``job_created`` line names its
origin and what the edits changed, the old job gets a ``job_rerun`` line naming the new one).

A state the old job never entered takes its data as the job ended. Without history only the start
state can be rerun from (nothing else records what the data was at another state); a rerun of a job
whose end history has not written yet is refused (the data would be rebuilt from part of its lines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidOperation
from ..models import TERMINAL_STATUSES, JobStatus

if TYPE_CHECKING:
    from ..models import Job
    from ..reads.timeline import Timeline


@dataclass(frozen=True, slots=True)
class RerunOrigin:
    """Where a rerun starts: the old job, the state, and the data it had there.

    ``visit``: which visit of ``state`` the data comes from (1 for the first), None when the job never
    entered it (the data as the job ended).
    """

    job_id: str
    blueprint: str
    client: str | None
    state: str
    visit: int | None
    initial_data: dict[str, Any]
    state_history: dict[str, Any]

    def link(self) -> dict[str, Any]:
        """What the new job's history records of its origin."""
        return {"job_id": self.job_id, "state": self.state, "visit": self.visit}


def rerun_origin(
    job_id: str,
    *,
    blueprint: str,
    client: str | None,
    status: str | None,
    state: str,
    start_state: str | None,
    timeline: Timeline | None,
    live: Job | None,
    visit: int | None = None,
) -> RerunOrigin:
    """The data of job ``job_id`` at ``state`` (its ``visit``-th visit, else the last).

    Raises:
        InvalidOperation: the job is still in flight, never had that visit, or ``state`` is not the
            start state and there is no timeline to rebuild the data from.
    """
    if status is not None and status not in TERMINAL_STATUSES and status != JobStatus.LOST:
        raise InvalidOperation(job_id, f"the job is {status}: cancel it, or wait for it to end, before a rerun")
    if timeline is None or not timeline.lines:
        if live is None or state != start_state or visit not in (None, 1):
            raise InvalidOperation(
                job_id, f"a rerun from '{state}' needs the job's history (only the start state can do without)"
            )
        return RerunOrigin(job_id, blueprint, client, state, 1, dict(live.initial_data), {})
    if live is not None and timeline.status != live.status:
        raise InvalidOperation(
            job_id, f"history has not caught up with the job yet (it shows it {timeline.status}); try again shortly"
        )
    visits = timeline.visits_of(state)
    if visit is not None and not 1 <= visit <= len(visits):
        entered = f"{len(visits)} time{'s' if len(visits) != 1 else ''}"
        raise InvalidOperation(job_id, f"the job entered '{state}' {entered}; there is no visit {visit}")
    if not visits:
        return RerunOrigin(job_id, blueprint, client, state, None, timeline.initial_data, timeline.state_history)
    chosen = visits[(visit or len(visits)) - 1]
    then = timeline.upto(chosen.entered_seq)
    return RerunOrigin(job_id, blueprint, client, state, chosen.number, then.initial_data, then.state_history)
