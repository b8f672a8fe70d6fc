"""Writes the engine's events to history in batches, off the hot path, and never fails a job.

The subscriber the engine calls is synchronous and quick: it snapshots the event
(:meth:`EventRecord.capture`) onto a bounded buffer and returns. A background task writes the
buffer in batches, each in one transaction. When the database is slow or down, batches stay in the
buffer and are retried with exponential backoff; when the buffer is full, new events are dropped and
counted (:attr:`HistoryWriter.dropped`, for a metric) with a warning in the log. Nothing is raised
into the engine.

A batch that keeps failing while the database answers holds a record the database refuses: the
writer then writes that batch one record at a time and drops (and counts in
:attr:`HistoryWriter.rejected`) only the records that fail, so one bad event cannot stop history.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from ..events import Event, EventBus, EventKind
from .base import HistoryStorage
from .records import EventRecord

logger = logging.getLogger(__name__)

#: What is recorded by default: every job event but progress reports (frequent, and the live task
#: holds the latest one). Worker events belong to no job and are never recorded.
DEFAULT_KINDS: frozenset[EventKind] = frozenset(EventKind) - {
    EventKind.TASK_PROGRESS,
    EventKind.WORKER_REGISTERED,
    EventKind.WORKER_EXPIRED,
}

#: Least time between two warnings about the same trouble (database down, buffer full).
WARN_EVERY_S = 60.0


class HistoryWriter:
    """Subscribes to an :class:`~avtomatika.events.EventBus` and writes its events to history.

    Args:
        history: Where to write (opened by the caller, who also closes it).
        bus: The engine's event bus (``engine.events``).
        max_buffer: Most events held while waiting to be written; past it new events are dropped.
        batch_size: Most events per transaction.
        write_at: Events buffered that start a write without waiting for ``flush_interval_s``. A write
            takes everything buffered, up to ``batch_size``: under load each batch is what came in
            while the previous one was written. A transaction costs the history's thread a few waits
            for the GIL whatever its size; written 500 at a time, a burst of 10,000 job creations
            left ~16,000 events waiting, each held in memory until written (and the allocator kept
            the memory they had used); now 900 to 6,000.
        flush_interval_s: Longest an event waits before being written when traffic is light.
        retry_initial_s: Wait after the first failed batch; doubled after each failure...
        retry_max_s: ...up to this.
        isolate_after: Failures of one batch, with the database answering pings, after which the
            batch is written one record at a time and the records it refuses are dropped.
        kinds: The event kinds to record (:data:`DEFAULT_KINDS`).
    """

    def __init__(
        self,
        history: HistoryStorage,
        bus: EventBus,
        *,
        max_buffer: int = 100_000,
        batch_size: int = 2000,
        write_at: int = 500,
        flush_interval_s: float = 0.5,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        isolate_after: int = 3,
        kinds: Collection[EventKind] = DEFAULT_KINDS,
    ) -> None:
        if max_buffer < 1 or batch_size < 1 or write_at < 1:
            raise ValueError("max_buffer, batch_size and write_at must be >= 1")
        self.history = history
        self.bus = bus
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.write_at = min(write_at, batch_size)
        self.flush_interval_s = flush_interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.isolate_after = isolate_after
        self.kinds = frozenset(kinds)
        #: Events dropped because the buffer was full.
        self.dropped = 0
        #: Events the database refused (written one by one, they still failed) or that could not be read.
        self.rejected = 0
        #: Events written.
        self.written = 0
        #: Failed attempts in a row (0 when the last write succeeded).
        self.failures = 0
        #: The last write error, None once a write succeeds again.
        self.last_error: BaseException | None = None
        self._buffer: deque[EventRecord] = deque()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()  # set (and replaced) whenever records leave the buffer
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._closing = False
        self._dropping_since: int | None = None  # self.dropped when the buffer last became full
        self._warned_at = -WARN_EVERY_S

    def __repr__(self) -> str:
        return f"HistoryWriter({self.history!r}, pending={self.pending}, dropped={self.dropped})"

    @property
    def pending(self) -> int:
        """Events waiting to be written."""
        return len(self._buffer)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and the studio's status page."""
        return {
            "pending": self.pending,
            "written": self.written,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "failures": self.failures,
            "last_error": repr(self.last_error) if self.last_error is not None else None,
        }

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe to the bus and start writing; for use inside a running loop."""
        if self._task is not None:
            raise RuntimeError("the history writer is already started")
        self._closing = False
        self._unsubscribe = self.bus.subscribe(self.on_event, remote=False)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="avtomatika-history-writer")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Unsubscribe, write what is buffered (for at most ``timeout_s``), and stop.

        What could not be written in time (the database is down) is lost, and logged as such.
        """
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except asyncio.CancelledError:  # our caller gave up: do not leave the task behind
            task.cancel()
            raise
        if self._buffer:
            logger.error(
                "history: stopped with %d events not written (%s)", len(self._buffer), self.last_error or "timeout"
            )
            self._buffer.clear()

    async def flush(self) -> bool:
        """Write everything buffered now; False (events kept) if the database fails."""
        while self._buffer:
            if not await self._write_batch():
                return False
        return True

    async def catch_up(self, timeout_s: float) -> int:
        """Have the events buffered now written, waiting at most ``timeout_s``; how many are still not.

        For readers that want what just happened in history without waiting on a buffer that never
        empties under load, or on a slow database: the background task writes (woken at once), this
        only waits. Events the database refused count as written.
        """
        target = self.written + self.rejected + len(self._buffer)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (behind := target - self.written - self.rejected) > 0 and self.running:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            progress = self._progress
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), remaining)
        return max(0, min(behind, len(self._buffer)))

    def _advanced(self) -> None:
        """Records left the buffer: wake :meth:`catch_up`'s waiters."""
        self._progress.set()
        self._progress = asyncio.Event()

    # -- the subscriber --------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """Buffer ``event`` (called by the bus, on the engine's path: quick, and never raises)."""
        if event.kind not in self.kinds or not event.job_id:
            return
        if len(self._buffer) >= self.max_buffer:
            self._drop()
            return
        try:
            record = EventRecord.capture(event)
        except Exception:
            self.rejected += 1
            logger.exception("history: could not record %s of job %s", event.kind, event.job_id)
            return
        if record is None:
            return
        self._buffer.append(record)
        if len(self._buffer) >= self.write_at:
            self._wake.set()

    def _drop(self) -> None:
        self.dropped += 1
        if self._dropping_since is None:
            self._dropping_since = self.dropped - 1
            logger.warning(
                "history: buffer full (%d events, database: %s); dropping new events until it catches up",
                self.max_buffer,
                self.last_error or "slow",
            )

    def _dropping_ended(self) -> None:
        lost = self.dropped - (self._dropping_since or 0)
        self._dropping_since = None
        logger.warning("history: buffer has room again; %d events were dropped (%d in all)", lost, self.dropped)

    # -- the background task ---------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if len(self._buffer) < self.write_at and not self._closing:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            if not self._buffer:
                if self._closing:
                    return
                continue
            if not await self._write_batch():
                await asyncio.sleep(self._backoff_s())

    def _backoff_s(self) -> float:
        return min(self.retry_max_s, self.retry_initial_s * 2.0 ** max(0, self.failures - 1))

    async def _write_batch(self) -> bool:
        """Write the oldest ``batch_size`` records; True when they left the buffer."""
        async with self._lock:
            batch = list(itertools.islice(self._buffer, self.batch_size))
            if not batch:
                return True
            try:
                await self.history.write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc, len(batch))
                if self.failures >= self.isolate_after and await self._reachable():
                    return await self._write_one_by_one(batch)
                return False
            self._written(len(batch))
            return True

    async def _write_one_by_one(self, batch: list[EventRecord]) -> bool:
        """Write ``batch`` record by record, dropping those the (reachable) database refuses."""
        for record in batch:
            try:
                await self.history.write([record])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not await self._reachable():
                    self._failed(exc, 1)
                    return False
                self.rejected += 1
                logger.error("history: the database refused %s of job %s; dropped: %r", record.kind, record.job_id, exc)
                self._buffer.popleft()
                self._advanced()
                continue
            self._written(1)
        self.failures = 0  # the batch is through, written or dropped: the next one starts afresh
        return True

    def _written(self, n: int) -> None:
        for _ in range(n):
            self._buffer.popleft()
        self.written += n
        self._advanced()
        if self.failures:
            logger.warning("history: writing again after %d failed attempts", self.failures)
        self.failures = 0
        self.last_error = None
        if self._dropping_since is not None and len(self._buffer) < self.max_buffer // 2:
            self._dropping_ended()

    def _failed(self, exc: Exception, size: int) -> None:
        self.failures += 1
        self.last_error = exc
        at = time.monotonic()
        if self.failures == 1 or at - self._warned_at >= WARN_EVERY_S:
            self._warned_at = at
            logger.warning(
                "history: writing %d events failed (attempt %d, %d buffered, retry in %.1f s): %r",
                size,
                self.failures,
                len(self._buffer),
                self._backoff_s(),
                exc,
            )

    async def _reachable(self) -> bool:
        try:
            await asyncio.wait_for(self.history.ping(), timeout=5.0)
        except Exception:
            return False
        return True
