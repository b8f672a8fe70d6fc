"""The history contract: what the studio, the API and reputation read, whatever database keeps it.

History is written from the engine's events (see :mod:`avtomatika.history.writer`) into two tables:
``jobs``, one row per job kept up to date from its events, and ``events``, every recorded event of
every job numbered by ``seq`` per job. Both backends (SQLite, PostgreSQL) pass one contract suite.

Times are UNIX seconds (floats), like :attr:`avtomatika.events.Event.at`; durations are milliseconds.
"""

from __future__ import annotations

import importlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Self

from ..errors import AvtomatikaError, ConfigError
from ..feed import dump_json
from .records import EventRecord, JobRecord, load_json, read_entries

if TYPE_CHECKING:
    from ..events import Event

logger = logging.getLogger(__name__)

#: Seconds in a day, for retention.
DAY_S = 86_400.0
#: How the feed of a storage in an engine's memory is named (``MemoryStorage.feed_id``): its jobs
#: end with the engine.
VOLATILE_FEED_PREFIX = "memory:"
#: The kind of the line :meth:`HistoryStorage.mark_lost` adds.
JOB_LOST = "job_lost"


@dataclass(frozen=True, slots=True)
class LostJob:
    """A job :meth:`HistoryStorage.mark_lost` marks: as its row had it."""

    id: str
    status: str
    state: str
    last_seq: int
    feed: str
    #: The error it had (why it was quarantined, what it is retrying after), if any: its root cause.
    cause: str | None = None

    def line(self, at: float) -> tuple[Any, ...]:
        """Its ``job_lost`` line, in ``EVENT_COLUMNS`` order."""
        return (self.id, self.last_seq + 1, at, JOB_LOST, self.state, "lost", None, None, dump_json(self.data))

    @property
    def error(self) -> str:
        was = self.status.replace("_", " ")
        lost = f"lost with its engine: it kept the job in memory, and stopped while the job was {was}"
        return f"{lost} · root cause: {self.cause}" if self.cause else lost

    @property
    def data(self) -> dict[str, Any]:
        found = {"was": self.status, "error": self.error, "feed": self.feed}
        if self.cause:
            found["cause"] = self.cause
        return found


class InvalidHistoryURI(ConfigError):
    """``HISTORY_DATABASE_URI`` names no backend we know, or is malformed."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"HISTORY_DATABASE_URI={uri!r}: {reason}")


class HistoryDriverMissing(ConfigError):
    """The backend's database driver is not installed."""

    def __init__(self, backend: str, package: str, remedy: str) -> None:
        self.backend = backend
        self.package = package
        self.remedy = remedy
        super().__init__(f"history in {backend} needs the '{package}' package: {remedy}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.backend, self.package, self.remedy))  # raised in SQLite history's process


def import_driver(backend: str, package: str, remedy: str = "pip install 'avtomatika[history]'") -> ModuleType:
    """The database driver ``package``, imported when history opens (:class:`HistoryDriverMissing` if absent)."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise HistoryDriverMissing(backend, package, remedy) from None


class HistoryOpenFailed(AvtomatikaError):
    """History's database could not be opened (a directory that does not exist, a file that is no
    database...): raised by ``open()``."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"history's SQLite process could not open {where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.where, self.reason))  # raised in SQLite history's process


class InvalidCursor(AvtomatikaError):
    """A page cursor that was not produced by :meth:`Cursor.encode` (the API answers 400)."""

    def __init__(self, cursor: str) -> None:
        self.cursor = cursor
        super().__init__(f"Invalid page cursor {cursor!r}")


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page of the job list ends: the last job's ``(created_at, id)``, newest first."""

    created_at: float
    id: str

    def encode(self) -> str:
        """An opaque string for URLs; ``repr`` of a float reads back to the same float."""
        return f"{self.created_at!r}~{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Read a cursor made by :meth:`encode`; raises :class:`InvalidCursor` otherwise."""
        created_at, sep, job_id = text.partition("~")
        try:
            value = float(created_at)
        except ValueError:
            raise InvalidCursor(text) from None
        if not sep or not job_id or value != value:  # value != value: NaN
            raise InvalidCursor(text)
        return cls(value, job_id)


class FeedMoved(AvtomatikaError):
    """A batch of a storage feed was not written: the database's position in that feed is no longer
    where the batch starts (another writer wrote it)."""

    def __init__(self, feed: str, expected: str | None, found: str | None) -> None:
        self.feed, self.expected, self.found = feed, expected, found
        super().__init__(f"history's position in feed {feed} is {found!r}, not {expected!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as itself: SQLite history's process raises it, and the writer catches it by its class.
        return (type(self), (self.feed, self.expected, self.found))


@dataclass(frozen=True, slots=True)
class FeedStep:
    """Where a batch of a storage feed's entries lies: after ``after`` (None: from the feed's start)
    up to ``through``. Written with it, history's position in ``feed`` moves to ``through``."""

    feed: str
    after: str | None
    through: str


@dataclass(frozen=True, slots=True)
class FeedWritten:
    """What :meth:`HistoryStorage.write_feed` did with a batch of feed entries.

    Attributes:
        events: The events written (of the kinds asked for).
        unreadable: The entries that could not be read, skipped: ``(index in the batch, error)``.
    """

    events: int
    unreadable: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Which jobs :meth:`HistoryStorage.list_jobs` returns; every field given must hold.

    Attributes:
        blueprint: The blueprint's name.
        status: One status (``"failed"``) or several (any of them).
        state: The current state (or the state it ended in).
        created_after: Created at or after this time (UNIX seconds).
        created_before: Created before this time (UNIX seconds).
        id_prefix: The job id starts with this (search by id).
        client: The client that created the job.
        error: Text its error message contains (case ignored, ASCII letters).
        data: Fields of its ``initial_data`` (dotted paths) and the value each must have: a string as it
            is, anything else as JSON (``5``, ``true``, ``null``).
    """

    blueprint: str | None = None
    status: str | tuple[str, ...] | None = None
    state: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    id_prefix: str | None = None
    client: str | None = None
    error: str | None = None
    data: tuple[tuple[str, str], ...] = ()

    @property
    def statuses(self) -> tuple[str, ...]:
        """``status`` as a tuple (empty: any status)."""
        if self.status is None:
            return ()
        return (self.status,) if isinstance(self.status, str) else tuple(self.status)


@dataclass(frozen=True, slots=True)
class RecordPage:
    """One page of history's job records, newest first; ``next_cursor`` is None on the last page."""

    jobs: list[JobRecord]
    next_cursor: Cursor | None = None


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a job's timeline.

    Attributes:
        job_id: The job.
        seq: Its position in the job's timeline (1, 2, ...), in the order events were published.
        at: When it happened (UNIX seconds).
        kind: An :class:`~avtomatika.events.EventKind` value, or ``"state_left"`` (see records.py).
        state: The state it happened in (for ``step_finished``: the state whose handler ran).
        status: The job's status after it, when the event came from a job change.
        worker_id: The worker, for task events.
        duration_ms: Time in the state (``state_left``), the handler's run (``step_finished``) or the
            whole job (``job_finished``, ``job_failed``, ``job_cancelled``).
        data: The event's details (task ids, params, results, errors, actors...).
    """

    job_id: str
    seq: int
    at: float
    kind: str
    state: str | None
    status: str | None
    worker_id: str | None
    duration_ms: float | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """A result a worker posted, as :meth:`HistoryStorage.worker_outcomes` returns it."""

    job_id: str
    task_id: str | None
    task_type: str | None
    status: str | None
    error_code: str | None
    at: float

    @property
    def succeeded(self) -> bool:
        return self.status == "success"


@dataclass(frozen=True, slots=True)
class HistoryCounts:
    """How many jobs there are by status and by current state (of one blueprint, or all)."""

    total: int
    by_status: dict[str, int]
    by_state: dict[str, int]
    by_state_status: dict[tuple[str, str], int]


class HistoryStorage(ABC):
    """Every job's timeline and a row per job, in a database; use as ``async with`` or open/close.

    Writes come in batches from :class:`~avtomatika.history.writer.HistoryWriter`, which reads them
    from live storage's feed; each batch is one transaction, which also moves history's position in
    that feed, so every line is written once. Reads are what the studio, the API and ``best_value``
    reputation need.
    """

    #: The backend's name, for logs and metrics ("sqlite", "postgresql").
    backend: str = ""

    # -- lifecycle -------------------------------------------------------------------------------
    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date (idempotent migrations)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; safe to call twice."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The newest migration applied."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abstractmethod
    async def database_id(self) -> str:
        """A random id this database was given when first opened: names it to a storage's feed."""

    # -- writing ---------------------------------------------------------------------------------
    @abstractmethod
    async def write(self, records: Sequence[EventRecord], feed: FeedStep | None = None) -> int:
        """Record a batch in one transaction: all of it or nothing. Returns the timeline lines added.

        With ``feed``, only if history's position in ``feed.feed`` is ``feed.after`` (else
        :class:`FeedMoved`, nothing written), and the position moves to ``feed.through`` in the same
        transaction (also for an empty batch: entries skipped).
        """

    async def write_feed(self, entries: Sequence[bytes], kinds: Collection[str], feed: FeedStep) -> FeedWritten:
        """Write a batch of feed entries as :meth:`write` does, from the entries themselves (their
        ``events`` bytes): only events whose kind is in ``kinds``; an entry that cannot be read is
        skipped and reported in :attr:`FeedWritten.unreadable`, never raised.

        Here the entries are read in this process; SQLite history sends them to its own process, which
        reads and writes them there.
        """
        records, unreadable = read_entries(entries, kinds)
        await self.write(records, feed)
        return FeedWritten(len(records), tuple(unreadable))

    @abstractmethod
    async def feed_position(self, feed: str) -> str | None:
        """The position of the last entry of ``feed`` written here, or None if none was."""

    async def record(self, events: Iterable[Event]) -> int:
        """Record engine events in one transaction (the writer's batches, tests, imports)."""
        records = [r for r in map(EventRecord.capture, events) if r is not None]
        return await self.write(records) if records else 0

    # -- reading ---------------------------------------------------------------------------------
    @abstractmethod
    async def timeline(self, job_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[Line]:
        """The job's timeline in order; ``after_seq`` skips what a caller has already shown."""

    @abstractmethod
    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job's row, or None when history never saw it (or purged it)."""

    @abstractmethod
    async def list_jobs(
        self, where: HistoryFilter | None = None, limit: int = 50, cursor: Cursor | str | None = None
    ) -> RecordPage:
        """A page of jobs matching ``where``, newest first, starting after ``cursor``."""

    @abstractmethod
    async def counts(self, blueprint: str | None = None) -> HistoryCounts:
        """Jobs by status and by current state, of ``blueprint`` or of every blueprint."""

    @abstractmethod
    async def worker_outcomes(self, worker_id: str, limit: int = 100) -> list[TaskOutcome]:
        """The worker's most recent results, newest first (for ``best_value`` reputation)."""

    # -- what outlives jobs ------------------------------------------------------------------------
    @abstractmethod
    async def save_graph(self, blueprint: str, version: str, graph: dict[str, Any]) -> None:
        """Keep ``blueprint``'s graph at ``version`` (``graph.model_to_json``); a version's graph never
        changes, so keeping it again changes nothing."""

    @abstractmethod
    async def graph(self, blueprint: str, version: str) -> dict[str, Any] | None:
        """The graph kept for ``blueprint`` at ``version``, or None."""

    @abstractmethod
    async def mark_lost(self, at: float, keep_feed: str) -> int:
        """Jobs that were still going in the memory of an engine that stopped: every job whose lines
        came from a memory feed (:data:`VOLATILE_FEED_PREFIX`) other than ``keep_feed``, and which had
        not ended, gets status ``lost`` and a ``job_lost`` line (``was``: its status then). Returns how
        many. An engine that keeps live state in memory calls it when it starts: the jobs of its
        predecessors on this history database went with them."""

    # -- retention -------------------------------------------------------------------------------
    @abstractmethod
    async def purge_before(self, cutoff_at: float, batch_size: int = 1000) -> int:
        """Delete jobs (with their timelines) last updated before ``cutoff_at``; returns how many.

        Deletes ``batch_size`` jobs per transaction, so writers are never blocked for long.
        """

    async def purge_older_than(self, days: float, batch_size: int = 1000) -> int:
        """Delete the history of jobs with no event in the last ``days`` days; returns how many."""
        if days < 0:
            raise ValueError("days must be >= 0")
        deleted = await self.purge_before(time.time() - days * DAY_S, batch_size)
        if deleted:
            logger.info("history: purged %d jobs older than %g days", deleted, days)
        return deleted


def as_cursor(cursor: Cursor | str | None) -> Cursor | None:
    """Accept a :class:`Cursor`, its encoded string, or None."""
    if cursor is None or isinstance(cursor, Cursor):
        return cursor
    return Cursor.decode(cursor)


def check_limit(limit: int) -> int:
    """Page sizes between 1 and 1000."""
    if not 1 <= limit <= 1000:
        raise ValueError(f"limit must be between 1 and 1000, not {limit}")
    return limit


def outcome_of(job_id: str, at: float, data: dict[str, Any]) -> TaskOutcome:
    """A :class:`TaskOutcome` from a ``task_result`` event's data."""
    result = data.get("result")
    result = result if isinstance(result, dict) else {}
    error = result.get("error")
    error = error if isinstance(error, dict) else {}
    status = result.get("status")
    code = error.get("code")
    return TaskOutcome(
        job_id=job_id,
        task_id=data.get("task_id"),
        task_type=data.get("task_type"),
        status=str(status) if status is not None else None,
        error_code=str(code) if code is not None else None,
        at=at,
    )


def line_of(values: Sequence[Any]) -> Line:
    """A :class:`Line` from an ``events`` row in ``EVENT_COLUMNS`` order."""
    job_id, seq, at, kind, state, status, worker_id, duration_ms, data = values
    return Line(job_id, seq, at, kind, state, status, worker_id, duration_ms, load_json(data))


def counts_from(rows: Iterable[tuple[str, str, int]]) -> HistoryCounts:
    """Fold ``(state, status, n)`` rows into :class:`HistoryCounts`."""
    by_status: dict[str, int] = {}
    by_state: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    for state, status, n in rows:
        by_status[status] = by_status.get(status, 0) + n
        by_state[state] = by_state.get(state, 0) + n
        pairs[(state, status)] = pairs.get((state, status), 0) + n
    return HistoryCounts(sum(by_status.values()), by_status, by_state, pairs)


def page_of(jobs: list[JobRecord], limit: int) -> RecordPage:
    """A page of ``limit`` jobs from ``limit + 1`` fetched; the extra one says there is a next page."""
    if len(jobs) <= limit:
        return RecordPage(jobs)
    jobs = jobs[:limit]
    return RecordPage(jobs, Cursor(jobs[-1].created_at, jobs[-1].id))
