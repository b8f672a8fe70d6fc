"""Writes live storage's history feed into history, in order, each line once, and never fails a job.

Every commit puts its events in storage's feed in the same atomic change (see
:class:`~avtomatika.storage.Commit`), so a line cannot be lost between a job's change and its history,
even when the engine is killed: what it had not written yet is still in the feed (on Redis) for the
next writer. A background task reads the feed in batches and writes each batch in one transaction
that also moves history's position in the feed (:class:`~avtomatika.history.base.FeedStep`): a batch
written twice (two writers racing after a lease ran out) is refused the second time, so no line is
counted twice. One process at a time writes a given history database (``Storage.lease_feed``), which
keeps each job's lines in order.

The writer hands history the entries as they are (bytes, :meth:`HistoryStorage.write_feed`) with the
kinds to keep: SQLite history reads and projects them in its own process, off the engine's; other
backends read them here. An entry that cannot be read is counted in :attr:`HistoryWriter.rejected`
and logged, never raised.

When the database is slow or down, entries stay in the feed and batches are retried with exponential
backoff. SQLite history's process dying is one such failure: the batch is retried, and a new process
takes it (a file: written once, or refused as already written, :class:`FeedMoved`, and the writer
reads where history stands; a temporary database: a new, empty one, with no position in the feed).
A batch that keeps failing while the database answers holds a record the database refuses: the
writer then writes that batch one entry at a time and skips (counting them in
:attr:`HistoryWriter.rejected`) only the entries that fail, so one bad event cannot stop history.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any

from ..events import Event, EventBus, EventKind
from ..storage.base import FeedEntry, Storage
from .base import FeedMoved, FeedStep, HistoryStorage
from .records import EventRecord, read_entries

logger = logging.getLogger(__name__)

#: What is recorded by default: every job event but progress reports (frequent, and the live task
#: holds the latest one). Worker events belong to no job and are never recorded.
DEFAULT_KINDS: frozenset[EventKind] = frozenset(EventKind) - {
    EventKind.TASK_PROGRESS,
    EventKind.WORKER_REGISTERED,
    EventKind.WORKER_EXPIRED,
}

#: Least time between two warnings about the same trouble (database down).
WARN_EVERY_S = 60.0
#: How long the right to write a history database lasts without being renewed (each batch renews it).
LEASE_S = 30.0
#: Longest :meth:`HistoryWriter.flush` takes by default.
FLUSH_TIMEOUT_S = 5.0


class _Unknown:
    """History's position in the feed, before it is read (None means "from the feed's start")."""


UNKNOWN = _Unknown()


class HistoryWriter:
    """Writes ``storage``'s history feed into ``history``.

    Args:
        history: Where to write (opened by the caller, who also closes it).
        storage: Live storage (connected), whose feed holds every commit's events.
        bus: The engine's event bus: events committed by this process wake the writer once
            ``write_at`` of them are waiting, instead of at the next ``flush_interval_s``.
        batch_size: Most feed entries (commits) per transaction.
        write_at: Events committed here since the last write that start a write at once.
        flush_interval_s: Longest an event waits before being written when traffic is light.
        retry_initial_s: Wait after the first failed batch; doubled after each failure...
        retry_max_s: ...up to this.
        isolate_after: Failures of one batch, with the database answering pings, after which the
            batch is written one entry at a time and the entries it refuses are skipped.
        lease_s: How long this writer keeps the right to write the database without renewing it.
        kinds: The event kinds to record (:data:`DEFAULT_KINDS`).
    """

    def __init__(
        self,
        history: HistoryStorage,
        storage: Storage,
        bus: EventBus | None = None,
        *,
        batch_size: int = 500,
        write_at: int = 500,
        flush_interval_s: float = 0.5,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        isolate_after: int = 3,
        lease_s: float = LEASE_S,
        kinds: Collection[EventKind] = DEFAULT_KINDS,
    ) -> None:
        if batch_size < 1 or write_at < 1:
            raise ValueError("batch_size and write_at must be >= 1")
        self.history = history
        self.storage = storage
        self.bus = bus
        self.batch_size = batch_size
        self.write_at = write_at
        self.flush_interval_s = flush_interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.isolate_after = isolate_after
        self.lease_s = lease_s
        self.kinds = frozenset(kinds)
        #: Events that could not be read, or that the database refused (written one by one, they
        #: still failed).
        self.rejected = 0
        #: Events written.
        self.written = 0
        #: Failed attempts in a row (0 when the last write succeeded).
        self.failures = 0
        #: The last write error, None once a write succeeds again.
        self.last_error: BaseException | None = None
        self._holder = uuid.uuid4().hex  # this writer, in the database's lease
        self._reader = ""  # the database's id, which names it to the feed
        self._position: str | _Unknown | None = UNKNOWN
        self._committed = 0  # events committed here since the last write
        self._passes = 0  # passes of the background task over the feed, started so far
        self._caught_up = 0  # the last pass that found nothing left to write
        self._holds_lease = True  # whether the last attempt found this writer holding the database
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set (and replaced) after each pass of the background task
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._warned_at = -WARN_EVERY_S

    def __repr__(self) -> str:
        return f"HistoryWriter({self.history!r}, written={self.written}, dropped={self.dropped})"

    @property
    def dropped(self) -> int:
        """Feed entries storage dropped because the feed was full (history down for long)."""
        return self.storage.feed_dropped

    @functools.cached_property
    def _kind_names(self) -> frozenset[str]:
        """:attr:`kinds` as plain strings (what SQLite history's process reads them as)."""
        return frozenset(map(str, self.kinds))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and the studio's status page."""
        return {
            "written": self.written,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "failures": self.failures,
            "last_error": repr(self.last_error) if self.last_error is not None else None,
        }

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start writing; for use inside a running loop.

        From here on the feed keeps every entry until this database has written it (the writer
        names its database to the feed at once; if storage cannot be reached now, at its first pass).
        """
        if self._task is not None:
            raise RuntimeError("the history writer is already started")
        try:
            self._reader = await self.history.database_id()
            self._holds_lease = await self.storage.lease_feed(self._reader, self._holder, self.lease_s)
        except Exception as exc:
            logger.warning("history: could not name this database to the feed yet (%r); writing will retry", exc)
        if self.bus is not None:
            self._unsubscribe = self.bus.subscribe(self._on_event, remote=False)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="avtomatika-history-writer")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Write what the feed holds (for at most ``timeout_s``), and stop.

        What could not be written in time stays in a shared storage's feed for the next writer; a
        storage in this process's memory loses it, and says so in the log.
        """
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not await self.flush(timeout_s):
                left = await self._feed_length()
                error = self.last_error or "timeout"
                logger.error("history: stopped with %d feed entries not written (%s)", left, error)
        if self._reader:
            with contextlib.suppress(Exception):  # unreachable: the lease ends by itself
                await self.storage.lease_feed(self._reader, self._holder, 0)  # another writer may go on now

    async def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
        """Write what the feed holds now, for at most ``timeout_s``; True when nothing is left to write.

        False when the database fails, when another process holds the right to write it (it writes
        within its ``flush_interval_s``), or when the time is up: callers read what is written.
        """
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    written = await self._write_batch()
                    if written is None:
                        return False
                    if written == 0:
                        return True
        except TimeoutError:
            return False

    async def catch_up(self, timeout_s: float) -> int:
        """Have what the feed holds now written, waiting at most ``timeout_s``; how many feed entries
        still wait (0: a read of history now sees everything committed before this call).

        For readers that want what just happened in history without waiting on a feed that never
        empties under load, or on a slow database: the background task writes (woken at once), this
        only waits, so no write is ever cancelled with its caller. While another process holds the
        right to write the database, it answers at once (that process writes within its
        ``flush_interval_s``).
        """
        if not self.running:
            return 0 if await self.flush(timeout_s) else await self._feed_length()
        needed = self._passes + 1  # a pass that starts after this call
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._caught_up < needed and self._holds_lease and (remaining := deadline - loop.time()) > 0:
            progress = self._progress
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await progress.wait()
        return 0 if self._caught_up >= needed else await self._feed_length()

    # -- the subscriber --------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        """Count events committed here: enough of them wake the writer (quick, never raises)."""
        self._committed += 1
        if self._committed >= self.write_at:
            self._wake.set()

    # -- the background task ---------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()  # after the wait: a wake-up during the pass starts the next one at once
            self._passes += 1
            while (written := await self._write_batch()) is not None and written >= self.batch_size:
                pass  # a full batch: more may be waiting
            if written is not None:
                self._caught_up = self._passes  # fewer than a batch was left: everything read is written
            self._progress.set()
            self._progress = asyncio.Event()
            if written is None and self.failures:
                await asyncio.sleep(self._backoff_s())

    def _backoff_s(self) -> float:
        return min(self.retry_max_s, self.retry_initial_s * 2.0 ** max(0, self.failures - 1))

    async def _write_batch(self) -> int | None:
        """Write the next batch of the feed: how many entries (0: none left), None if it could not."""
        async with self._lock:
            self._committed = 0
            try:
                if not self._reader:
                    self._reader = await self.history.database_id()
                self._holds_lease = await self.storage.lease_feed(self._reader, self._holder, self.lease_s)
                if not self._holds_lease:
                    return None  # another process writes this database
                if isinstance(self._position, _Unknown):
                    self._position = await self.history.feed_position(self.storage.feed_id)
                entries = await self.storage.read_feed(self._position, self.batch_size)
                if entries:
                    # A stop cancelling this pass mid-write lets the write end, and its position and
                    # count be kept: the database has the batch either way.
                    await asyncio.shield(self._write(entries))
            except asyncio.CancelledError:
                raise
            except FeedMoved:
                self._position = UNKNOWN  # another writer wrote it: read where history stands
                return None
            except Exception as exc:
                self._failed(exc)
                if self.failures >= self.isolate_after and await self._reachable():
                    return await self._write_one_by_one()
                return None
            return len(entries)

    async def _write_one_by_one(self) -> int | None:
        """Write the next batch entry by entry, skipping those the (reachable) database refuses."""
        entries = await self.storage.read_feed(self._position, self.batch_size)  # type: ignore[arg-type]
        for entry in entries:
            try:
                await self._write([entry])
            except asyncio.CancelledError:
                raise
            except FeedMoved:
                self._position = UNKNOWN
                return None
            except Exception as exc:
                if not await self._reachable():
                    self._failed(exc)
                    return None
                self.rejected += len(self._records([entry]))
                logger.error(
                    "history: the database refused the lines of feed entry %s; skipped: %r", entry.position, exc
                )
                await self._write([entry], skip=True)
        self.failures = 0  # the batch is through, written or skipped: the next one starts afresh
        return len(entries)

    async def _write(self, entries: Sequence[FeedEntry], *, skip: bool = False) -> None:
        """Write ``entries`` (or, with ``skip``, only move past them) in one transaction that moves
        history's position in the feed, then trim what is written from the feed.

        The entries go to history as they are (bytes): SQLite history reads them in its own process.
        """
        step = FeedStep(self.storage.feed_id, self._position, entries[-1].position)  # type: ignore[arg-type]
        events = [] if skip else [entry.events for entry in entries]
        done = await self.history.write_feed(events, self._kind_names, step)
        for index, error in done.unreadable:
            self.rejected += 1
            logger.error("history: could not read feed entry %s; skipped: %s", entries[index].position, error)
        await self._written(step, done.events)

    def _records(self, entries: Sequence[FeedEntry]) -> list[EventRecord]:
        """The records of ``entries`` (those it cannot read left out: ``_write`` counts them)."""
        return read_entries([entry.events for entry in entries], self._kind_names)[0]

    async def _written(self, step: FeedStep, count: int) -> None:
        self._position = step.through
        self.written += count
        if self.failures:
            logger.warning("history: writing again after %d failed attempts", self.failures)
        self.failures = 0
        self.last_error = None
        try:
            await self.storage.trim_feed(self._reader, step.through)
        except Exception as exc:  # written all the same: what is left is trimmed after the next batch
            logger.warning("history: could not trim the feed after writing it: %r", exc)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = exc
        at = time.monotonic()
        if self.failures == 1 or at - self._warned_at >= WARN_EVERY_S:
            self._warned_at = at
            logger.warning(
                "history: writing failed (attempt %d, retry in %.1f s): %r", self.failures, self._backoff_s(), exc
            )

    async def _reachable(self) -> bool:
        try:
            await asyncio.wait_for(self.history.ping(), timeout=5.0)
        except Exception:
            return False
        return True

    async def _feed_length(self) -> int:
        try:
            return await self.storage.feed_length()
        except Exception:
            return -1
