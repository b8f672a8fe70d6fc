"""The history writer (and the retention loop): batching, a bounded buffer that counts what it drops, retries while the
database is down, records the database refuses, and a clean stop. SQLite in memory underneath."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from history_contract import JobScript

from avtomatika.events import Event, EventBus, EventKind
from avtomatika.history import EventRecord, HistoryWriter, SQLiteHistory, retention_loop


class FlakyHistory(SQLiteHistory):
    """SQLite in memory that can be 'down', refuses records of the job ``poison``, and logs batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.batches: list[int] = []

    async def write(self, records: Sequence[EventRecord]) -> int:
        if self.down:
            raise ConnectionRefusedError("history database is down")
        if any(r.job_id == "poison" for r in records):
            raise ValueError("the database refuses this record")
        self.batches.append(len(records))
        return await super().write(records)

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
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
async def make_writer(history: FlakyHistory, bus: EventBus) -> AsyncIterator[MakeWriter]:
    made: list[HistoryWriter] = []

    def make(**options: float) -> HistoryWriter:
        options = {"flush_interval_s": 0.01, "retry_initial_s": 0.01, "retry_max_s": 0.05, **options}
        writer = HistoryWriter(history, bus, **options)  # type: ignore[arg-type]
        made.append(writer)
        return writer

    yield make
    for writer in made:
        await writer.stop(timeout_s=1)


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


async def test_events_are_written_in_batches(history: FlakyHistory, bus: EventBus, make_writer: MakeWriter) -> None:
    writer = make_writer(batch_size=4, flush_interval_s=60)
    await writer.start()
    for event in steps("j", 10):
        bus.publish(event)
    await eventually(lambda: writer.written == 8)  # two full batches go at once...
    assert writer.pending == 2  # ...the rest waits for the flush interval (or stop)
    await writer.stop()
    assert history.batches == [4, 4, 2]
    assert [e.seq for e in await history.timeline("j")] == list(range(1, 11))


async def test_a_write_starts_at_write_at_and_takes_everything_buffered(
    history: FlakyHistory, bus: EventBus, make_writer: MakeWriter
) -> None:
    writer = make_writer(batch_size=8, write_at=3, flush_interval_s=60)
    assert HistoryWriter(history, EventBus(), batch_size=2, write_at=5).write_at == 2  # never past a batch
    await writer.start()
    for event in steps("j", 20):  # published before the writer runs: all buffered at once
        bus.publish(event)
    await eventually(lambda: writer.written == 20)
    assert history.batches == [8, 8, 4]  # up to batch_size each, the rest since it is >= write_at
    for event in JobScript("k").created().step().events:
        bus.publish(event)
    await asyncio.sleep(0.05)
    assert writer.pending == 2  # fewer than write_at: they wait for the flush interval (or stop)
    await writer.stop()
    assert history.batches == [8, 8, 4, 2]


async def test_light_traffic_is_written_within_the_flush_interval(
    history: FlakyHistory, bus: EventBus, make_writer: MakeWriter
) -> None:
    writer = make_writer(batch_size=500, flush_interval_s=0.05)
    await writer.start()
    bus.publish(steps("j", 1)[0])
    await eventually(lambda: writer.written == 1, timeout_s=2)
    assert len(await history.timeline("j")) == 1


async def test_a_full_buffer_drops_new_events_counts_them_and_warns(
    history: FlakyHistory, bus: EventBus, make_writer: MakeWriter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="avtomatika.history")
    history.down = True
    writer = make_writer(max_buffer=10, batch_size=4)
    await writer.start()
    events = steps("j", 25)
    for event in events:
        bus.publish(event)  # never raises into the publisher
    assert (writer.pending, writer.dropped) == (10, 15)
    assert caplog.text.count("buffer full") == 1  # one warning per episode, not one per event
    await eventually(lambda: writer.failures >= 2)
    assert writer.stats()["dropped"] == 15

    history.down = False
    await eventually(lambda: writer.pending == 0)
    assert (writer.written, writer.dropped, writer.failures) == (10, 15, 0)
    assert "15 events were dropped" in caplog.text
    assert "writing again after" in caplog.text
    assert [e.at for e in await history.timeline("j")] == [e.at for e in events[:10]]  # the oldest were kept


async def test_failed_batches_are_kept_and_retried_with_backoff(
    history: FlakyHistory, bus: EventBus, make_writer: MakeWriter
) -> None:
    history.down = True
    writer = make_writer(batch_size=3, retry_initial_s=0.01, retry_max_s=0.04)
    await writer.start()
    for event in steps("j", 5):
        bus.publish(event)
    await eventually(lambda: writer.failures >= 4)
    assert writer.pending == 5
    assert writer._backoff_s() == 0.04  # capped
    assert not await writer.flush()  # a flush while down keeps everything
    assert writer.pending == 5
    history.down = False
    await eventually(lambda: writer.pending == 0)
    assert [e.seq for e in await history.timeline("j")] == [1, 2, 3, 4, 5]


async def test_a_record_the_database_refuses_is_dropped_alone(
    history: FlakyHistory, bus: EventBus, make_writer: MakeWriter
) -> None:
    writer = make_writer(batch_size=100, isolate_after=2)
    await writer.start()
    good = steps("good", 3)
    for event in [good[0], *steps("poison", 1), *good[1:]]:
        bus.publish(event)
    await eventually(lambda: writer.pending == 0)
    assert (writer.written, writer.rejected) == (3, 1)
    assert [e.seq for e in await history.timeline("good")] == [1, 2, 3]
    assert await history.get_job("poison") is None
    for event in steps("after", 2):  # the writer goes on in batches
        bus.publish(event)
    await eventually(lambda: writer.written == 5)
    assert writer.failures == 0


async def test_stop_writes_what_is_left(history: FlakyHistory, bus: EventBus, make_writer: MakeWriter) -> None:
    writer = make_writer(batch_size=1000, flush_interval_s=60)
    await writer.start()
    for event in steps("j", 7):
        bus.publish(event)
    await asyncio.sleep(0)
    assert writer.written == 0
    await writer.stop()
    assert writer.written == 7
    assert not writer.running
    bus.publish(steps("later", 1)[0])  # unsubscribed
    assert writer.pending == 0
    await writer.stop()  # twice is fine


async def test_only_job_events_of_the_chosen_kinds_are_buffered(bus: EventBus, make_writer: MakeWriter) -> None:
    writer = make_writer()
    await writer.start()
    bus.publish(Event(EventKind.WORKER_REGISTERED, data={"worker_id": "w"}))
    bus.publish(Event(EventKind.TASK_PROGRESS, "j", None, "s", None, {"progress": 0.1}))
    assert writer.pending == 0
    only = make_writer(kinds={EventKind.TASK_PROGRESS})
    only.on_event(Event(EventKind.TASK_PROGRESS, "j", None, "s", None, {"progress": 0.1}))
    only.on_event(steps("j", 1)[0])
    assert only.pending == 1


async def test_an_event_that_cannot_be_read_is_counted_not_raised(
    bus: EventBus, make_writer: MakeWriter, caplog: pytest.LogCaptureFixture
) -> None:
    writer = make_writer()
    await writer.start()
    broken = Event(EventKind.JOB_CREATED, "j", "bp", "s", "pending", {})
    broken.at = "not a time"  # type: ignore[assignment]
    bus.publish(broken)
    assert (writer.rejected, writer.pending) == (1, 0)
    assert "could not record" in caplog.text


async def test_lifecycle_misuse(make_writer: MakeWriter, history: FlakyHistory, bus: EventBus) -> None:
    writer = make_writer()
    await writer.start()
    with pytest.raises(RuntimeError, match="already started"):
        await writer.start()
    with pytest.raises(ValueError, match="max_buffer"):
        HistoryWriter(history, bus, max_buffer=0)
    assert "pending=0" in repr(writer)


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
