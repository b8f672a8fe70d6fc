"""The history writer (and the retention loop): it writes live storage's feed in batches, each line once
and in order (also with two writers racing, or a writer restarted), retries while the database is
down, skips entries the database refuses, and stops cleanly. SQLite in memory, MemoryStorage's feed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from support.history_contract import JobScript, feed_commit

from avtomatika.events import Event, EventBus, EventKind
from avtomatika.history import EventRecord, HistoryStorage, HistoryWriter, SQLiteHistory, retention_loop
from avtomatika.history.base import FeedStep
from avtomatika.storage import MemoryStorage, Storage
from avtomatika.storage.redis import RedisStorage, keys


class FlakyHistory(SQLiteHistory):
    """SQLite (temporary) that can be 'down', refuses records of the job ``poison``, and logs batch sizes.

    It reads feed entries here, as every backend but SQLite does, so its ``write`` sees every batch's
    records (SQLite sends the entries' bytes to its process: see ``test_history_process.py``).
    """

    write_feed = HistoryStorage.write_feed

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.batches: list[int] = []

    async def write(self, records: Sequence[EventRecord], feed: FeedStep | None = None) -> int:
        if self.down:
            raise ConnectionRefusedError("history database is down")
        if any(r.job_id == "poison" for r in records):
            raise ValueError("the database refuses this record")
        if records:
            self.batches.append(len(records))
        return await super().write(records, feed)

    async def purge_before(self, cutoff_at: float, batch_size: int = 1000) -> int:
        if self.down:
            raise ConnectionRefusedError("history database is down")
        return await super().purge_before(cutoff_at, batch_size)

    async def ping(self) -> None:
        if self.down:
            raise ConnectionRefusedError("history database is down")
        await super().ping()


MakeWriter = Callable[..., HistoryWriter]


@pytest.fixture
async def history() -> AsyncIterator[FlakyHistory]:
    history = FlakyHistory()
    await history.open()
    try:
        yield history
    finally:
        await history.close()


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
async def make_writer(history: FlakyHistory, storage: MemoryStorage, bus: EventBus) -> AsyncIterator[MakeWriter]:
    made: list[HistoryWriter] = []

    def make(**options: float) -> HistoryWriter:
        options = {"flush_interval_s": 0.01, "retry_initial_s": 0.01, "retry_max_s": 0.05, **options}
        writer = HistoryWriter(history, storage, bus, **options)  # type: ignore[arg-type]
        made.append(writer)
        return writer

    yield make
    for writer in made:
        await writer.stop(timeout_s=1)


async def commit(storage: Storage, events: Sequence[Event], bus: EventBus | None = None) -> None:
    """``events`` into the feed as one entry, as a commit puts them there (and on the bus, as the
    committer does)."""
    await feed_commit(storage, events)
    for event in events if bus is not None else ():
        bus.publish(event)


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def steps(job_id: str, n: int) -> list[Event]:
    """``n`` events of one job: created, then handler steps."""
    job = JobScript(job_id).created()
    for _ in range(n - 1):
        job.step()
    return job.events


async def test_entries_are_written_in_batches(
    history: FlakyHistory, storage: MemoryStorage, make_writer: MakeWriter
) -> None:
    writer = make_writer(batch_size=4, flush_interval_s=60)
    for event in steps("j", 10):
        await commit(storage, [event])
    assert await writer.flush()
    assert history.batches == [4, 4, 2]
    assert [e.seq for e in await history.timeline("j")] == list(range(1, 11))
    assert await storage.feed_length() == 0  # written, so trimmed


async def test_events_committed_here_wake_the_writer_at_write_at(
    history: FlakyHistory, storage: MemoryStorage, bus: EventBus, make_writer: MakeWriter
) -> None:
    writer = make_writer(batch_size=100, write_at=3, flush_interval_s=60)
    await writer.start()
    await commit(storage, steps("j", 2), bus)
    await asyncio.sleep(0.05)
    assert writer.written == 0  # fewer than write_at: they wait for the flush interval (or stop)
    await commit(storage, JobScript("k").created().events, bus)
    await eventually(lambda: writer.written == 3)
    assert history.batches == [3]


async def test_light_traffic_is_written_within_the_flush_interval(
    history: FlakyHistory, storage: MemoryStorage, make_writer: MakeWriter
) -> None:
    writer = make_writer(batch_size=500, flush_interval_s=0.05)
    await writer.start()
    await commit(storage, steps("j", 1))
    await eventually(lambda: writer.written == 1, timeout_s=2)
    assert len(await history.timeline("j")) == 1


async def test_a_full_feed_drops_the_oldest_entries_counts_them_and_warns(
    history: FlakyHistory, make_writer: MakeWriter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="avtomatika.storage")
    storage = MemoryStorage(max_feed=10)
    writer = HistoryWriter(history, storage, flush_interval_s=0.01, retry_initial_s=0.01, retry_max_s=0.05)
    events = steps("j", 25)
    for event in events:
        await commit(storage, [event])  # never raises into the committer
    assert (await storage.feed_length(), writer.dropped) == (10, 15)
    assert caplog.text.count("history feed full") == 1  # one warning, not one per entry
    assert await writer.flush()
    assert (writer.written, writer.dropped, writer.stats()["dropped"]) == (10, 15, 15)
    assert [e.at for e in await history.timeline("j")] == [e.at for e in events[15:]]  # the newest were kept


async def test_failed_batches_stay_in_the_feed_and_are_retried_with_backoff(
    history: FlakyHistory, storage: MemoryStorage, make_writer: MakeWriter, caplog: pytest.LogCaptureFixture
) -> None:
    history.down = True
    writer = make_writer(batch_size=3, retry_initial_s=0.01, retry_max_s=0.04)
    await writer.start()
    for event in steps("j", 5):
        await commit(storage, [event])
    await eventually(lambda: writer.failures >= 4)
    assert await storage.feed_length() == 5
    assert writer._backoff_s() == 0.04  # capped
    assert writer.last_error is not None
    assert not await writer.flush()  # a flush while down keeps everything
    assert await storage.feed_length() == 5
    history.down = False
    await eventually(lambda: writer.written == 5)
    assert [e.seq for e in await history.timeline("j")] == [1, 2, 3, 4, 5]
    assert "writing again after" in caplog.text


async def test_an_entry_the_database_refuses_is_skipped_alone(
    history: FlakyHistory, storage: MemoryStorage, make_writer: MakeWriter
) -> None:
    writer = make_writer(batch_size=100, isolate_after=2)
    await writer.start()
    good = steps("good", 3)
    for events in ([good[0]], steps("poison", 1), good[1:]):
        await commit(storage, events)
    await eventually(lambda: writer.written == 3)
    assert writer.rejected == 1
    assert [e.seq for e in await history.timeline("good")] == [1, 2, 3]
    assert await history.get_job("poison") is None
    await commit(storage, steps("after", 2))  # the writer goes on in batches
    await eventually(lambda: writer.written == 5)
    assert writer.failures == 0


async def test_stop_writes_what_is_left(history: FlakyHistory, storage: MemoryStorage, make_writer: MakeWriter) -> None:
    writer = make_writer(batch_size=1000, flush_interval_s=60)
    await writer.start()
    await commit(storage, steps("j", 7))
    await asyncio.sleep(0)
    assert writer.written == 0
    await writer.stop()
    assert writer.written == 7
    assert not writer.running
    await writer.stop()  # twice is fine


async def test_a_stop_during_a_write_keeps_it_and_counts_it_once(
    history: FlakyHistory, storage: MemoryStorage, make_writer: MakeWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's pass is cancelled by stop() while the database writes: the write ends, its lines are
    counted and not written again."""
    writing, release = asyncio.Event(), asyncio.Event()
    real_write = history.write

    async def late_write(records: Sequence[EventRecord], feed: FeedStep | None) -> int:
        await release.wait()
        return await real_write(records, feed)

    async def slow_write(records: Sequence[EventRecord], feed: FeedStep | None = None) -> int:
        writing.set()  # as SQLite's thread: a cancel of the caller does not stop the write
        return await asyncio.shield(asyncio.ensure_future(late_write(records, feed)))

    monkeypatch.setattr(history, "write", slow_write)
    writer = make_writer(batch_size=1000)
    await writer.start()
    await commit(storage, steps("j", 5))
    await writing.wait()
    stopping = asyncio.create_task(writer.stop())
    await asyncio.sleep(0.01)
    release.set()
    await stopping
    assert writer.written == 5
    assert [e.seq for e in await history.timeline("j")] == [1, 2, 3, 4, 5]


async def test_only_job_events_of_the_chosen_kinds_are_written(
    history: FlakyHistory, storage: MemoryStorage, make_writer: MakeWriter
) -> None:
    await commit(storage, [Event(EventKind.WORKER_REGISTERED, data={"worker_id": "w"})])
    await commit(storage, [Event(EventKind.TASK_PROGRESS, "j", None, "s", None, {"progress": 0.1})])
    writer = make_writer()
    assert await writer.flush()
    assert writer.written == 0
    await writer.stop()  # gives the database up to the next writer
    await commit(storage, [Event(EventKind.TASK_PROGRESS, "k", None, "s", None, {"progress": 0.1})])
    only = make_writer(kinds={EventKind.TASK_PROGRESS})
    assert await only.flush()
    assert only.written == 1  # the earlier entries were written by the first (the same database)
    assert [e.kind for e in await history.timeline("k")] == ["task_progress"]


async def test_an_entry_that_cannot_be_read_is_counted_not_raised(
    history: FlakyHistory, redis_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry the writer cannot read (left by another version, or damaged) is skipped and counted."""
    storage = RedisStorage(redis_client)
    await storage.connect()
    try:
        await redis_client.xadd(storage.keys.key(keys.FEED), {"e": b"not json"})
        await commit(storage, steps("k", 1))
        writer = HistoryWriter(history, storage)
        assert await writer.flush()
        assert (writer.rejected, writer.written) == (1, 1)
        assert "could not read feed entry" in caplog.text
        assert await storage.feed_length() <= 1  # both trimmed (Redis may keep the last one written)
    finally:
        await storage.close()


async def test_two_writers_racing_write_each_line_once_and_in_order(
    history: FlakyHistory, storage: MemoryStorage, make_writer: MakeWriter
) -> None:
    """Two writers of one database (as after a lease ran out): the feed position refuses a batch
    written already, and the loser reads where history stands and goes on."""
    first, second = make_writer(batch_size=3, lease_s=0), make_writer(batch_size=3, lease_s=0)
    events = steps("j", 20)
    for event in events:
        await commit(storage, [event])
    flushed = await asyncio.gather(*(writer.flush() for writer in (first, second, first, second)))
    assert any(flushed)
    await first.flush()
    assert first.written + second.written == 20
    timeline = await history.timeline("j")
    assert [e.seq for e in timeline] == list(range(1, 21))
    assert [e.at for e in timeline] == [e.at for e in events]


async def test_a_new_writer_goes_on_where_history_stands(
    history: FlakyHistory, storage: MemoryStorage, make_writer: MakeWriter
) -> None:
    for event in steps("j", 4):
        await commit(storage, [event])
    first = make_writer()
    assert await first.flush()
    await first.stop()
    await commit(storage, JobScript("k").created().events)
    again = make_writer()
    assert await again.flush()
    assert again.written == 1
    assert len(await history.timeline("j")) == 4


async def test_every_history_database_gets_every_line(storage: MemoryStorage) -> None:
    """Two databases on one feed (two engines, each with its own SQLite): what one has written stays
    in the feed until the other has written it too."""
    databases = [SQLiteHistory(), SQLiteHistory()]
    for database in databases:
        await database.open()
    try:
        writers = [HistoryWriter(database, storage) for database in databases]
        for writer in writers:  # each database a reader of the feed from its first look
            assert await writer.flush()
        await commit(storage, steps("j", 3))
        assert await writers[0].flush()
        assert await storage.feed_length() == 1  # the second has not written it yet
        await commit(storage, steps("k", 2))
        assert await writers[1].flush()
        assert await storage.feed_length() == 1  # k's entry: the first has not written it
        assert await writers[0].flush()
        assert await storage.feed_length() == 0
        for database in databases:
            assert [len(await database.timeline(job_id)) for job_id in "jk"] == [3, 2]
    finally:
        for database in databases:
            await database.close()


async def test_lifecycle_misuse(make_writer: MakeWriter, history: FlakyHistory, storage: MemoryStorage) -> None:
    writer = make_writer()
    await writer.start()
    with pytest.raises(RuntimeError, match="already started"):
        await writer.start()
    with pytest.raises(ValueError, match="batch_size"):
        HistoryWriter(history, storage, batch_size=0)
    assert "written=0" in repr(writer)


async def test_retention_loop_purges_and_survives_failures(
    history: FlakyHistory, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    await history.record(JobScript("old", at=now - 10 * 86_400).created().events)
    await history.record(JobScript("new", at=now).created().events)
    history.down = True
    task = asyncio.create_task(retention_loop(history, 7, every_s=0.01, batch_size=10))
    try:
        await eventually(lambda: "purging jobs older than 7 days failed" in caplog.text)
        assert not task.done()
        history.down = False
        deadline = time.monotonic() + 5
        while await history.get_job("old") is not None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert await history.get_job("new") is not None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(ValueError, match="days"):
        await retention_loop(history, 0)
