"""From events to rows: the snapshot taken when an event is published, and the projection of a batch.

The projection is plain Python shared by both backends: given the ``jobs`` rows of a batch's jobs as
stored, it numbers each job's events, computes durations, and updates the rows. A backend only reads
those rows, and writes the lines and rows back, in one transaction.

Durations come from consecutive events of a job: when a job enters a state (or ends), a synthetic
``state_left`` line records the time spent in the state it leaves, since ``state_entered_at``.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import orjson

from ..event_kinds import EventKind
from ..feed import dump_json, row_of, rows_of

if TYPE_CHECKING:  # events.py imports asyncio, which history's SQLite process does without
    from ..events import Event

logger = logging.getLogger(__name__)

#: The kind of the synthetic line written when a job leaves a state (its ``duration_ms``: time in it).
STATE_LEFT = "state_left"

#: Events that end a job for good (a quarantined job waits for an operator, so it is not "finished").
ENDING_KINDS = frozenset({EventKind.JOB_FINISHED, EventKind.JOB_FAILED, EventKind.JOB_CANCELLED})
#: Retries counted in ``jobs.retry_count`` (the engine counts the same ones in ``Job.retry_count``).
RETRY_KINDS = frozenset({EventKind.TASK_RETRY, EventKind.HANDLER_RETRY})
#: Events that bring a job back from an end or from quarantine.
REOPENING_KINDS = frozenset({EventKind.JOB_RETRIED, EventKind.JOB_RELEASED})

_NUMBER_TYPES = (int, float)


def load_json(text: str | bytes | None) -> dict[str, Any]:
    """The dict stored by :func:`dump_json` ({} for nothing)."""
    if not text:
        return {}
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {"value": value}


@dataclass(slots=True)
class EventRecord:
    """An event as history keeps it: a feed row (see :mod:`avtomatika.feed`), taken when committed.

    ``data_json`` is the event's data as JSON text; ``facts`` the few scalars the projection reads.
    Not a frozen dataclass: one is built for every event, and a frozen one costs twice as much to build.
    """

    kind: str
    job_id: str
    at: float
    blueprint: str | None
    state: str | None
    status: str | None
    data_json: str
    facts: dict[str, Any]

    @classmethod
    def capture(cls, event: Event) -> EventRecord | None:
        """Snapshot ``event`` (as the feed keeps it); None for events that belong to no job."""
        if not event.job_id:
            return None
        return cls(*row_of(event))


@dataclass(slots=True)
class JobRecord:
    """A job as history knows it: one row of the ``jobs`` table, kept up to date from its events.

    Attributes:
        id: The job id.
        blueprint: The blueprint's name ("" while history has seen no event naming it).
        blueprint_version: The hash of the blueprint's graph the job was created on.
        status: The job's status after its latest event.
        state: Its current state (or the state it ended in).
        client: The client that created it.
        parent_job_id: The parent, for a sub-job.
        created_at: When it was created (UNIX seconds).
        updated_at: When its latest event happened.
        finished_at: When it finished, failed or was cancelled (None while it can still go on).
        state_entered_at: When it entered its current state (None once it ended).
        error: The latest error (cleared when it moves on).
        retry_count: Task and handler retries so far.
        last_seq: How many timeline lines it has.
        feed: The live storage feed its latest lines came from (names the storage that holds the job).
    """

    id: str
    blueprint: str = ""
    blueprint_version: str | None = None
    status: str = ""
    state: str = ""
    client: str | None = None
    parent_job_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    state_entered_at: float | None = None
    error: str | None = None
    retry_count: int = 0
    last_seq: int = 0
    feed: str | None = None

    @property
    def duration_s(self) -> float | None:
        """From creation to the end, or None while the job can still go on."""
        return None if self.finished_at is None else self.finished_at - self.created_at

    def as_tuple(self) -> tuple[Any, ...]:
        """The values in :data:`JOB_COLUMNS` order."""
        return tuple(getattr(self, name) for name in JOB_COLUMNS)


def read_entries(entries: Iterable[bytes], kinds: Container[str]) -> tuple[list[EventRecord], list[tuple[int, str]]]:
    """The records of feed entries (their ``events`` bytes, see :mod:`avtomatika.feed`) whose kind is
    in ``kinds``, and the entries that could not be read: ``(index in entries, error)``. An unreadable
    entry (damaged, or left by another version) is skipped, never raised: it must not stop history.
    """
    records: list[EventRecord] = []
    unreadable: list[tuple[int, str]] = []
    for index, events in enumerate(entries):
        try:
            records += [EventRecord(*row) for row in rows_of(events) if row[0] in kinds]
        except (ValueError, TypeError, LookupError) as exc:  # not JSON, not rows, rows of another shape
            unreadable.append((index, repr(exc)))
    return records, unreadable


#: The ``jobs`` table's columns, in the order :meth:`JobRecord.as_tuple` gives them.
JOB_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(JobRecord))
#: The ``events`` table's columns, in the order :func:`project` gives a line's values.
EVENT_COLUMNS = ("job_id", "seq", "at", "kind", "state", "status", "worker_id", "duration_ms", "data")

#: One line of the ``events`` table, in :data:`EVENT_COLUMNS` order.
EventLine = tuple[str, int, float, str, str | None, str | None, str | None, float | None, str]


def project(records: list[EventRecord], rows: dict[str, JobRecord], feed: str | None = None) -> list[EventLine]:
    """Number and time ``records`` against ``rows`` (updated in place, new jobs added); ``feed``: the
    storage feed they were read from, recorded on the rows.

    Returns the lines to insert; every row in ``rows`` whose job had a record needs writing back.
    """
    lines: list[EventLine] = []
    for record in records:
        row = rows.get(record.job_id)
        if row is None:  # history joined late, or purged the job: start from what this event says
            row = rows[record.job_id] = JobRecord(record.job_id, created_at=record.at, updated_at=record.at)
        _apply(record, row, lines)
        if feed is not None:
            row.feed = feed
    return lines


def _apply(record: EventRecord, row: JobRecord, lines: list[EventLine]) -> None:
    kind, at, facts = record.kind, record.at, record.facts
    duration_ms: float | None = None
    entry_state = record.state
    if kind == EventKind.JOB_CREATED:
        _created(record, row)
    elif kind == EventKind.STATE_ENTERED:
        previous = facts.get("previous")
        _leave_state(row, at, str(previous) if previous is not None else row.state, {"next": record.state}, lines)
        row.state_entered_at = at
        row.error = None
        row.finished_at = None
    elif kind in ENDING_KINDS:
        _leave_state(row, at, record.state or row.state, {"reason": kind}, lines)
        row.state_entered_at = None
        row.finished_at = at
        row.error = _text(facts.get("error"))
        duration_ms = _ms(at - row.created_at)
    elif kind == EventKind.JOB_QUARANTINED:
        row.error = _text(facts.get("error"))
    elif kind in REOPENING_KINDS:
        row.finished_at = None
        row.error = None
    elif kind in RETRY_KINDS:
        row.retry_count += 1
        row.error = _text(facts.get("error"))
    elif kind == EventKind.STEP_FINISHED:
        ran = facts.get("state")
        entry_state = str(ran) if ran is not None else record.state
        duration_ms = _number(facts.get("duration_ms"))
    _append_line(record, row, lines, entry_state, duration_ms)


def _append_line(
    record: EventRecord, row: JobRecord, lines: list[EventLine], entry_state: str | None, duration_ms: float | None
) -> None:
    """The job's row brought up to ``record``, and its line added to ``lines``."""
    at = record.at
    if record.blueprint is not None:  # built from the job itself: its state and status are current
        row.blueprint = record.blueprint
        if record.state is not None:
            row.state = record.state
        if record.status is not None:
            row.status = record.status
    row.updated_at = max(row.updated_at, at)
    row.last_seq += 1
    worker = record.facts.get("worker_id")
    lines.append(
        (
            row.id,
            row.last_seq,
            at,
            record.kind,
            entry_state,
            record.status,
            str(worker) if worker is not None else None,
            duration_ms,
            record.data_json,
        )
    )


def _created(record: EventRecord, row: JobRecord) -> None:
    facts = record.facts
    row.created_at = min(row.created_at, record.at) if row.last_seq else record.at
    row.client = _text(facts.get("client"))
    row.parent_job_id = _text(facts.get("parent_job_id"))
    row.blueprint_version = _text(facts.get("blueprint_version"))
    row.state_entered_at = record.at


def _leave_state(row: JobRecord, at: float, state: str, data: dict[str, Any], lines: list[EventLine]) -> None:
    """Add a ``state_left`` line with the time spent in ``state``, if the job was in one."""
    if row.state_entered_at is None:
        return
    row.last_seq += 1
    duration_ms = _ms(at - row.state_entered_at)
    lines.append((row.id, row.last_seq, at, STATE_LEFT, state, None, None, duration_ms, dump_json(data)))


def _ms(seconds: float) -> float:
    return round(max(0.0, seconds) * 1000, 3)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool):
        return float(value)
    return None
