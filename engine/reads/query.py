"""What a jobs list asks for and what it shows: :class:`JobQuery`, :class:`JobRow`, :class:`JobPage`,
and :func:`parse_time`, the one reader of times given by people (API query strings, studio forms).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..history.base import Cursor, HistoryFilter
from ..models import ENDED_STATUSES, Job, JobStatus, now

if TYPE_CHECKING:
    from ..history.records import JobRecord

#: Statuses a job never leaves by itself: its duration stops counting (``lost`` included).
OVER_STATUSES = frozenset({*ENDED_STATUSES, JobStatus.LOST})


def parse_time(text: str | None) -> float | None:
    """UNIX seconds, or an ISO 8601 date and time (``datetime-local`` too), as UNIX seconds.

    A time without a zone is UTC. None for nothing given; ValueError for anything else.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO 8601 nor UNIX seconds") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True, slots=True)
class JobQuery(HistoryFilter):
    """Which jobs a list shows: history's filter, which live jobs are matched against too."""

    def matches_job(self, job: Job) -> bool:
        """Whether a live job passes every filter, ``data`` included."""
        return self.matches(JobRow.of(job)) and all(_field_is(job.initial_data, p, v) for p, v in self.data)

    def matches(self, row: JobRow) -> bool:
        """Whether ``row`` passes every filter but ``data`` (live rows, and the scan of live storage)."""
        return (
            (not self.blueprint or row.blueprint == self.blueprint)
            and (not self.statuses or row.status in self.statuses)
            and (not self.state or row.state == self.state)
            and (not self.id_prefix or row.id.startswith(self.id_prefix))
            and (self.created_after is None or row.created_at >= self.created_after)
            and (self.created_before is None or row.created_at < self.created_before)
            and (self.client is None or row.client == self.client)
            and (not self.error or self.error.casefold() in (row.error or "").casefold())
        )


def _field_is(data: Any, path: str, expected: str) -> bool:
    """Whether ``data`` has ``expected`` at the dotted ``path``: a string as it is, anything else as JSON
    (``5``, ``true``, ``null``)."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return (data if isinstance(data, str) else json.dumps(data)) == expected


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job in a list: from a live :class:`~avtomatika.models.Job` or from history's row.

    The names are the job's own (``blueprint``, ``state``, ``error``...), so API summaries and
    studio rows are built from either alike.
    """

    id: str
    blueprint: str
    status: str
    state: str
    created_at: float
    updated_at: float
    finished_at: float | None = None
    error: str | None = None
    retry_count: int = 0
    client: str | None = None
    blueprint_version: str | None = None

    @classmethod
    def of(cls, job: Job) -> JobRow:
        ended = job.updated_at if job.status in OVER_STATUSES else None
        return cls(
            job.id,
            job.blueprint,
            job.status,
            job.state,
            job.created_at,
            job.updated_at,
            ended,
            job.error,
            job.retry_count,
            job.client,
        )

    @classmethod
    def of_history(cls, row: JobRecord) -> JobRow:
        return cls(*(getattr(row, name) for name in _ROW_FIELDS))  # history's job record names them alike

    @property
    def over(self) -> bool:
        """Whether the job will not move again by itself (finished, failed, cancelled, lost)."""
        return self.status in OVER_STATUSES

    @property
    def duration_s(self) -> float:
        """Run time so far, or until it ended (a lost job's until the last thing history saw)."""
        until = self.finished_at if self.finished_at is not None else (self.updated_at if self.over else now())
        return max(until - self.created_at, 0.0)


_ROW_FIELDS = tuple(f.name for f in fields(JobRow))


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a jobs list, newest first; ``next_cursor`` None on the last page."""

    rows: list[JobRow]
    next_cursor: Cursor | None = None
    #: Events not yet in history when the page was read: it may miss that many recent changes.
    history_pending: int = 0
    #: Where the rows come from: ``history`` or ``engine`` (live storage, when there is no history).
    source: str = "history"
