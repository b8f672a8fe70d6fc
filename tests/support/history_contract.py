"""One contract for every history backend: subclass :class:`HistoryContract` and give it a ``history``.

Each backend's test module (test_history_sqlite.py, test_history_postgres.py) defines a ``Test...``
subclass with two fixtures: ``history`` (an open, empty :class:`HistoryStorage`) and
``reopen`` (a factory opening another instance on the same database, or None when there is no
such thing, as with SQLite in memory). Events are built directly, with times chosen by the test,
so durations are exact.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from avtomatika.events import Event, EventKind
from avtomatika.history import (
    STATE_LEFT,
    Cursor,
    EventRecord,
    HistoryFilter,
    HistoryStorage,
    HistoryWriter,
    InvalidCursor,
    JobRecord,
)
from avtomatika.history import records as records_module
from avtomatika.history.base import FeedMoved, FeedStep
from avtomatika.history.migrations import POSTGRES, SQLITE, latest
from avtomatika.models import Job, new_id
from avtomatika.storage import MemoryStorage, Storage

Reopen = Callable[[], Awaitable[HistoryStorage]] | None


def records_of(events: Sequence[Event]) -> list[EventRecord]:
    return [record for record in map(EventRecord.capture, events) if record is not None]


async def feed_commit(storage: Storage, events: Sequence[Event]) -> None:
    """``events`` into ``storage``'s history feed as one entry, as a commit puts them there."""
    await storage.create_job(Job(id=new_id(), blueprint="feed", state="s"), run=False, events=events)


T0 = 1_700_000_000.0


@dataclass
class JobScript:
    """Builds one job's events as the engine publishes them, one second apart unless told otherwise."""

    job_id: str
    blueprint: str = "video"
    at: float = T0
    state: str = "start"
    status: str = "pending"
    events: list[Event] = field(default_factory=list)

    def tick(self, seconds: float = 1.0) -> float:
        self.at += seconds
        return self.at

    def job_event(self, kind: EventKind, status: str | None = None, **data: Any) -> Event:
        """An event built from the job (blueprint, state and status set), as outcomes.event() does."""
        self.status = status or self.status
        event = Event(kind, self.job_id, self.blueprint, self.state, self.status, data, at=self.tick())
        self.events.append(event)
        return event

    def task_event(self, kind: EventKind, task_id: str, task_type: str, **data: Any) -> Event:
        """A task event (taken, result), published with no blueprint and no status."""
        event = Event(kind, self.job_id, None, self.state, None, {"task_id": task_id, "task_type": task_type, **data})
        event.at = self.tick()
        self.events.append(event)
        return event

    def created(self, initial_data: dict[str, Any] | None = None, client: str | None = "acme") -> JobScript:
        data = {"initial_data": initial_data or {}, "client": client, "parent_job_id": None, "blueprint_version": "v1"}
        self.job_event(EventKind.JOB_CREATED, "pending", **data)
        return self

    def step(self, duration_ms: float = 2.0) -> JobScript:
        """A handler ran in the current state (published first in its outcome)."""
        ran = self.state
        self.job_event(EventKind.STEP_FINISHED, "running", state=ran, duration_ms=duration_ms)
        return self

    def enter(self, state: str, **data: Any) -> JobScript:
        previous, self.state = self.state, state
        self.job_event(EventKind.STATE_ENTERED, "running", previous=previous, **data)
        return self

    def dispatch(self, task_id: str, task_type: str = "transcode", worker: str | None = "w1", **data: Any) -> JobScript:
        status = data.pop("status", "waiting_for_worker")
        attempt = data.pop("attempt", 1)
        params = data.pop("params", {"quality": "high"})
        self.job_event(
            EventKind.TASK_DISPATCHED,
            status,
            task_id=task_id,
            task_type=task_type,
            params=params,
            attempt=attempt,
            worker_id=worker,
            **data,
        )
        return self

    def taken(self, task_id: str, worker: str = "w1", task_type: str = "transcode", attempt: int = 1) -> JobScript:
        self.task_event(EventKind.TASK_TAKEN, task_id, task_type, worker_id=worker, attempt=attempt)
        return self

    def result(
        self, task_id: str, status: str = "success", worker: str = "w1", task_type: str = "transcode", **extra: Any
    ) -> JobScript:
        result: dict[str, Any] = {"status": status, **extra}
        self.task_event(EventKind.TASK_RESULT, task_id, task_type, result=result, worker_id=worker)
        return self

    def end(self, kind: EventKind, status: str, error: str | None = None, **data: Any) -> JobScript:
        self.job_event(kind, status, error=error, **data)
        return self

    def finished(self) -> JobScript:
        return self.end(EventKind.JOB_FINISHED, "finished")


def kinds_and_states(entries: list[Any]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.state) for e in entries]


def realistic_job(job_id: str = "job-real") -> tuple[JobScript, list[tuple[str, str | None]]]:
    """A job through a retry, a quarantine, a release with edited params and a fan-out of three.

    Returns the script and the timeline expected from it, ``state_left`` lines included.
    """
    job = JobScript(job_id).created({"video": "cat.mp4"})
    job.step().enter("transcode")
    job.step().dispatch("t1", worker="w1").taken("t1", "w1")
    job.result("t1", "failure", "w1", error={"code": "TRANSIENT_ERROR", "message": "disk full"})
    job.job_event(
        EventKind.TASK_RETRY,
        "awaiting_retry",
        task_id="t1",
        next_task_id="t2",
        attempt=2,
        error="TRANSIENT_ERROR: disk full",
        retry_in_s=1.0,
    )
    job.dispatch("t2", worker="w2", attempt=2).taken("t2", "w2", attempt=2)
    job.result("t2", "failure", "w2", error={"code": "PERMANENT_ERROR", "message": "bad codec"})
    job.end(EventKind.JOB_QUARANTINED, "quarantined", "PERMANENT_ERROR: bad codec")
    job.job_event(EventKind.JOB_RELEASED, "waiting_for_worker", actor="alice", params={"codec": "h264"})
    job.dispatch("t3", worker="w1", params={"quality": "high", "codec": "h264"}).taken("t3", "w1")
    job.result("t3", "success", "w1", data={"path": "/out/cat.mkv"})
    job.enter("thumbnails")
    job.step()
    for i in range(3):
        job.dispatch(f"p{i}", "thumbnail", worker=f"w{i}", status="waiting_for_parallel_tasks")
    for i in range(3):
        job.taken(f"p{i}", f"w{i}", "thumbnail")
    for i in range(3):
        job.result(f"p{i}", "success", f"w{i}", "thumbnail", data={"frame": i})
    job.enter("collect").step().enter("done").step().finished()
    expected = [
        ("job_created", "start"),
        ("step_finished", "start"),
        (STATE_LEFT, "start"),
        ("state_entered", "transcode"),
        ("step_finished", "transcode"),
        ("task_dispatched", "transcode"),
        ("task_taken", "transcode"),
        ("task_result", "transcode"),
        ("task_retry", "transcode"),
        ("task_dispatched", "transcode"),
        ("task_taken", "transcode"),
        ("task_result", "transcode"),
        ("job_quarantined", "transcode"),
        ("job_released", "transcode"),
        ("task_dispatched", "transcode"),
        ("task_taken", "transcode"),
        ("task_result", "transcode"),
        (STATE_LEFT, "transcode"),
        ("state_entered", "thumbnails"),
        ("step_finished", "thumbnails"),
        *[("task_dispatched", "thumbnails")] * 3,
        *[("task_taken", "thumbnails")] * 3,
        *[("task_result", "thumbnails")] * 3,
        (STATE_LEFT, "thumbnails"),
        ("state_entered", "collect"),
        ("step_finished", "collect"),
        (STATE_LEFT, "collect"),
        ("state_entered", "done"),
        ("step_finished", "done"),
        (STATE_LEFT, "done"),
        ("job_finished", "done"),
    ]
    return job, expected


def many_jobs(n: int, *, blueprints: tuple[str, ...] = ("a", "b"), same_time_every: int = 3) -> Iterator[Event]:
    """``n`` created jobs; every ``same_time_every`` share one ``created_at`` (ties for the keyset)."""
    for i in range(n):
        at = T0 + (i // same_time_every)
        status = ("pending", "finished", "failed")[i % 3]
        blueprint = blueprints[i % len(blueprints)]
        yield Event(
            EventKind.JOB_CREATED,
            f"job-{i:04d}",
            blueprint,
            f"s{i % 4}",
            status,
            {"initial_data": {"i": i}, "client": f"client-{i % 2}", "blueprint_version": "v1"},
            at=at,
        )


class HistoryContract:
    """The behaviour every :class:`HistoryStorage` must have."""

    @pytest.fixture
    def reopen(self) -> Reopen:
        return None

    async def refuse_job(self, history: HistoryStorage, job_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make writing ``job_id``'s row fail with an error saying "boom" (``monkeypatch.undo()`` and
        :meth:`accept_jobs` end it). Here the projection fails in this process; a backend whose
        projection runs elsewhere (SQLite's process) makes its database refuse the row instead."""
        real = records_module.JobRecord.as_tuple

        def explode(row: JobRecord) -> tuple[Any, ...]:
            if row.id == job_id:
                raise RuntimeError("boom")
            return real(row)

        monkeypatch.setattr(records_module.JobRecord, "as_tuple", explode)

    async def accept_jobs(self, history: HistoryStorage) -> None:
        """Undo :meth:`refuse_job` where the database refused (``monkeypatch.undo()`` did the rest)."""

    # -- schema ----------------------------------------------------------------------------------
    async def test_schema_is_at_the_latest_version(self, history: HistoryStorage) -> None:
        expected = latest(SQLITE if history.backend == "sqlite" else POSTGRES)
        assert expected >= 1
        assert await history.schema_version() == expected

    async def test_migrations_are_idempotent(self, history: HistoryStorage, reopen: Reopen) -> None:
        await history.record(JobScript("j").created().events)
        await history.open()  # already open: nothing happens
        if reopen is None:
            pytest.skip("the database does not outlive its connection")
        again = await reopen()  # runs the migrations against an up-to-date schema
        try:
            assert await again.schema_version() == await history.schema_version()
            assert (await again.get_job("j")) is not None
        finally:
            await again.close()

    # -- what is recorded ------------------------------------------------------------------------
    async def test_job_created_is_recorded_with_its_data_client_and_version(self, history: HistoryStorage) -> None:
        job = JobScript("j1").created({"video": "cat.mp4", "n": [1, 2]}, client="acme")
        assert await history.record(job.events) == 1
        row = await history.get_job("j1")
        assert row == JobRecord(
            id="j1",
            blueprint="video",
            blueprint_version="v1",
            status="pending",
            state="start",
            client="acme",
            parent_job_id=None,
            created_at=T0 + 1,
            updated_at=T0 + 1,
            finished_at=None,
            state_entered_at=T0 + 1,
            error=None,
            retry_count=0,
            last_seq=1,
        )
        [entry] = await history.timeline("j1")
        assert (entry.seq, entry.kind, entry.state, entry.status, entry.at) == (
            1,
            "job_created",
            "start",
            "pending",
            T0 + 1,
        )
        assert entry.data["initial_data"] == {"video": "cat.mp4", "n": [1, 2]}
        assert entry.data["client"] == "acme"
        assert entry.data["blueprint_version"] == "v1"

    async def test_states_left_carry_the_time_spent_in_them(self, history: HistoryStorage) -> None:
        job = JobScript("j").created()
        job.step(duration_ms=3.5)
        job.tick(9)  # the step event is at +2, entering at +12: 11 s in "start"
        job.enter("work").step().enter("done").step().finished()
        await history.record(job.events)
        timeline = await history.timeline("j")
        assert [e.seq for e in timeline] == list(range(1, len(timeline) + 1))
        left = [(e.state, e.duration_ms, e.data) for e in timeline if e.kind == STATE_LEFT]
        assert left == [
            ("start", 11_000.0, {"next": "work"}),
            ("work", 2_000.0, {"next": "done"}),
            ("done", 2_000.0, {"reason": "job_finished"}),
        ]
        steps = [(e.state, e.duration_ms) for e in timeline if e.kind == "step_finished"]
        assert steps == [("start", 3.5), ("work", 2.0), ("done", 2.0)]
        finished = timeline[-1]
        assert (finished.kind, finished.status, finished.duration_ms) == ("job_finished", "finished", 15_000.0)
        row = await history.get_job("j")
        assert row is not None
        assert (row.status, row.state, row.finished_at, row.state_entered_at) == ("finished", "done", T0 + 16, None)
        assert row.duration_s == 15.0

    async def test_sequence_numbers_continue_across_batches(self, history: HistoryStorage) -> None:
        job = JobScript("j").created().step().enter("work")
        await history.record(job.events[:1])
        await history.record(job.events[1:2])
        await history.record(job.events[2:])
        timeline = await history.timeline("j")
        assert [(e.seq, e.kind) for e in timeline] == [
            (1, "job_created"),
            (2, "step_finished"),
            (3, STATE_LEFT),
            (4, "state_entered"),
        ]
        assert timeline[2].duration_ms == 2000.0  # since an entry written in an earlier batch

    async def test_large_batches_of_many_jobs(self, history: HistoryStorage) -> None:
        # More jobs and lines in one batch than a backend may write per statement (SQLite: 128),
        # and not a multiple of it; then a second batch for all of them, whose rows are read back.
        n = 1201
        assert await history.record(many_jobs(n)) == n
        later = [JobScript(f"job-{i:04d}", at=T0 + 1000).step().events[0] for i in range(n)]
        assert await history.record(later) == n
        first = await history.list_jobs(limit=1000)
        rest = await history.list_jobs(limit=1000, cursor=first.next_cursor)
        rows = first.jobs + rest.jobs
        assert len({row.id for row in rows}) == n
        assert {(row.last_seq, row.updated_at) for row in rows} == {(2, T0 + 1001)}
        for i in (0, 127, 128, 1000, 1200):
            timeline = await history.timeline(f"job-{i:04d}")
            assert [(e.seq, e.kind) for e in timeline] == [(1, "job_created"), (2, "step_finished")]
            assert timeline[0].data["initial_data"] == {"i": i}

    async def test_times_keep_every_digit(self, history: HistoryStorage) -> None:
        # As they were published, to the last bit: pages of jobs are ordered by created_at.
        job = JobScript("j", at=1_795_839_058.3844361).created()
        job.tick(0.000123456789)
        job.step(duration_ms=0.053217).enter("work")
        # Two batches: the second reads back the row the first wrote.
        assert await history.record(job.events[:1]) + await history.record(job.events[1:]) == 4
        timeline = await history.timeline("j")
        assert [e.at for e in timeline] == [job.events[0].at, job.events[1].at, job.events[2].at, job.events[2].at]
        assert timeline[1].duration_ms == 0.053217
        assert timeline[2].duration_ms == round((job.events[2].at - job.events[0].at) * 1000, 3)
        row = await history.get_job("j")
        assert row is not None
        assert (row.created_at, row.updated_at, row.state_entered_at) == (
            job.events[0].at,
            job.events[2].at,
            job.events[2].at,
        )

    async def test_retries_errors_and_reopening(self, history: HistoryStorage) -> None:
        job = JobScript("j").created().step().enter("work").dispatch("t1")
        job.job_event(EventKind.TASK_RETRY, "awaiting_retry", task_id="t1", error="TRANSIENT_ERROR: x", attempt=2)
        job.job_event(EventKind.HANDLER_RETRY, "awaiting_retry", error="handler raised", attempt=1)
        await history.record(job.events)
        row = await history.get_job("j")
        assert row is not None
        assert (row.retry_count, row.error, row.status) == (2, "handler raised", "awaiting_retry")
        more = JobScript("j", at=job.at, state="work", status=job.status)
        more.end(EventKind.JOB_FAILED, "failed", "gave up", actor="bob")
        await history.record(more.events)
        row = await history.get_job("j")
        assert row is not None
        assert (row.status, row.error, row.finished_at) == ("failed", "gave up", more.at)
        again = JobScript("j", at=more.at, state="work", status="failed")
        again.job_event(EventKind.JOB_RETRIED, "running", actor="alice", from_state="work")
        again.enter("work")
        await history.record(again.events)
        row = await history.get_job("j")
        assert row is not None
        assert (row.status, row.error, row.finished_at, row.retry_count) == ("running", None, None, 2)
        timeline = await history.timeline("j")
        assert timeline[-2].kind == "job_retried"
        assert timeline[-2].data == {"actor": "alice", "from_state": "work"}
        assert timeline[-1].kind == "state_entered"  # no state_left: the job had left "work" when it failed
        failed = next(e for e in timeline if e.kind == "job_failed")
        assert failed.data["actor"] == "bob"

    async def test_quarantine_and_release_keep_the_operator_and_params(self, history: HistoryStorage) -> None:
        job = JobScript("j").created().step().enter("work").dispatch("t1")
        job.result("t1", "failure", error={"code": "PERMANENT_ERROR"})
        job.end(EventKind.JOB_QUARANTINED, "quarantined", "PERMANENT_ERROR: no")
        await history.record(job.events)
        row = await history.get_job("j")
        assert row is not None
        assert (row.status, row.error, row.finished_at) == ("quarantined", "PERMANENT_ERROR: no", None)
        job.events.clear()
        job.job_event(EventKind.JOB_RELEASED, "waiting_for_worker", actor="carol", params={"retries": 0})
        job.dispatch("t2", params={"retries": 0})
        await history.record(job.events)
        row = await history.get_job("j")
        assert row is not None
        assert (row.status, row.error) == ("waiting_for_worker", None)
        released = [e for e in await history.timeline("j") if e.kind == "job_released"]
        assert [e.data for e in released] == [{"actor": "carol", "params": {"retries": 0}}]

    async def test_task_events_do_not_change_the_jobs_status(self, history: HistoryStorage) -> None:
        job = JobScript("j").created().step().enter("work").dispatch("t1", worker="w9").taken("t1", "w9")
        job.result("t1", "success", "w9")
        await history.record(job.events)
        row = await history.get_job("j")
        assert row is not None
        assert row.status == "waiting_for_worker"
        timeline = await history.timeline("j")
        assert [e.worker_id for e in timeline[-3:]] == ["w9", "w9", "w9"]
        assert timeline[-3].data["params"] == {"quality": "high"}
        assert timeline[-3].data["attempt"] == 1
        assert timeline[-1].data["result"] == {"status": "success"}
        assert timeline[-1].status is None

    async def test_events_of_an_unknown_job_start_its_row(self, history: HistoryStorage) -> None:
        event = Event(EventKind.TASK_TAKEN, "late", None, "work", None, {"task_id": "t", "worker_id": "w"}, at=T0)
        await history.record([event])
        row = await history.get_job("late")
        assert row is not None
        assert (row.blueprint, row.created_at, row.last_seq, row.status) == ("", T0, 1, "")
        await history.record([Event(EventKind.JOB_WAITING, "late", "bp", "work", "waiting_for_human", {}, at=T0 + 1)])
        row = await history.get_job("late")
        assert row is not None
        assert (row.blueprint, row.state, row.status) == ("bp", "work", "waiting_for_human")

    async def test_events_without_a_job_are_not_recorded(self, history: HistoryStorage) -> None:
        assert await history.record([Event(EventKind.WORKER_REGISTERED, data={"worker_id": "w"})]) == 0
        assert (await history.list_jobs()).jobs == []

    async def test_data_round_trips_and_odd_values_become_text(self, history: HistoryStorage) -> None:
        data = {
            "text": 'żółw 🐢 "quoted" \\ back',
            "nul": "a\x00b",
            "nested": {"list": [1, 2.5, None, True], "empty": {}},
            "when": datetime(2026, 1, 2, tzinfo=UTC),
            "tags": {"x"},
            7: "int key",
        }
        await history.record([Event(EventKind.JOB_WAITING, "j", "bp", "s", "waiting_for_human", data, at=T0)])
        [entry] = await history.timeline("j")
        assert entry.data["text"] == data["text"]
        assert entry.data["nested"] == data["nested"]
        assert entry.data["when"] == "2026-01-02T00:00:00+00:00"
        assert entry.data["tags"] == ["x"]
        assert entry.data["7"] == "int key"
        assert entry.data["nul"] in ("a\x00b", "a\ufffdb")  # PostgreSQL's jsonb cannot hold NUL

    async def test_a_failed_batch_writes_nothing(
        self, history: HistoryStorage, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await history.record(JobScript("ok").created().events)
        await self.refuse_job(history, "bad", monkeypatch)
        batch = [*JobScript("ok", at=T0 + 10).created().events, *JobScript("bad").created().events]
        with pytest.raises(Exception, match="boom"):
            await history.record(batch)
        monkeypatch.undo()
        await self.accept_jobs(history)
        assert await history.get_job("bad") is None
        assert [e.seq for e in await history.timeline("ok")] == [1]
        await history.record(JobScript("ok", at=T0 + 20).step().events)  # still writable, numbering intact
        assert [e.seq for e in await history.timeline("ok")] == [1, 2]

    # -- queries ---------------------------------------------------------------------------------
    async def test_timeline_after_seq_and_limit(self, history: HistoryStorage) -> None:
        await history.record(JobScript("j").created().step().enter("a").step().enter("b").events)
        assert [e.seq for e in await history.timeline("j", after_seq=3)] == [4, 5, 6, 7]
        assert [e.seq for e in await history.timeline("j", after_seq=3, limit=2)] == [4, 5]
        assert await history.timeline("nope") == []
        assert await history.get_job("nope") is None

    async def test_list_pages_cover_every_job_once_newest_first(self, history: HistoryStorage) -> None:
        await history.record(many_jobs(25))
        seen: list[JobRecord] = []
        cursor: Cursor | str | None = None
        pages = 0
        while True:
            page = await history.list_jobs(limit=7, cursor=cursor)
            seen.extend(page.jobs)
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor.encode() if pages % 2 else page.next_cursor  # both forms work
        assert pages == 4
        keys = [(j.created_at, j.id) for j in seen]
        assert keys == sorted(keys, reverse=True)
        assert len({j.id for j in seen}) == 25

    async def test_a_full_last_page_has_no_next_cursor(self, history: HistoryStorage) -> None:
        await history.record(many_jobs(6))
        first = await history.list_jobs(limit=3)
        assert first.next_cursor is not None
        second = await history.list_jobs(limit=3, cursor=first.next_cursor)
        assert len(second.jobs) == 3
        assert second.next_cursor is None

    async def test_list_filters(self, history: HistoryStorage) -> None:
        await history.record(many_jobs(30))

        async def ids(**where: Any) -> list[str]:
            return [j.id for j in (await history.list_jobs(HistoryFilter(**where), limit=100)).jobs]

        everything = await ids()
        assert len(everything) == 30
        assert await ids(blueprint="a") == [i for i in everything if int(i[-4:]) % 2 == 0]
        assert await ids(status="failed") == [i for i in everything if int(i[-4:]) % 3 == 2]
        assert await ids(status=("failed", "pending")) == [i for i in everything if int(i[-4:]) % 3 != 1]
        assert await ids(blueprint="b", state="s1") == [i for i in everything if int(i[-4:]) % 4 == 1]
        assert await ids(blueprint="a", status="finished") == [i for i in everything if int(i[-4:]) % 6 == 4]
        assert await ids(client="client-1") == [i for i in everything if int(i[-4:]) % 2 == 1]
        assert await ids(created_after=T0 + 2, created_before=T0 + 4) == [f"job-{n:04d}" for n in range(11, 5, -1)]
        assert await ids(id_prefix="job-001") == [f"job-00{n}" for n in range(19, 9, -1)]
        assert await ids(id_prefix="job-0012") == ["job-0012"]
        assert await ids(id_prefix="zzz") == []
        assert await ids(id_prefix="job-00", blueprint="b", status="pending", created_before=T0 + 3) == ["job-0003"]

    async def test_list_searches_errors_and_input_fields(self, history: HistoryStorage) -> None:
        inputs = {
            "j1": {"customer": "acme", "size": {"n": 2}, "rush": True, "tags": ["a"]},
            "j2": {"customer": "globex", "size": {"n": 20}, "rush": False},
            "j3": {"customer": "acme", "size": {"n": "2"}, "odd.key": "x"},
        }
        errors = {"j1": "PERMANENT_ERROR: File 100% Corrupt", "j2": "TRANSIENT_ERROR: timeout_1", "j3": None}
        for n, (job_id, data) in enumerate(inputs.items()):
            job = JobScript(job_id, at=T0 + n).created(data).step()
            if errors[job_id]:
                job.end(EventKind.JOB_FAILED, "failed", errors[job_id])
            await history.record(job.events)

        async def ids(**where: Any) -> list[str]:
            return sorted(j.id for j in (await history.list_jobs(HistoryFilter(**where), limit=100)).jobs)

        assert await ids(data=(("customer", "acme"),)) == ["j1", "j3"]
        assert await ids(data=(("size.n", "2"),)) == ["j1", "j3"], "a number as JSON, a string as it is"
        assert await ids(data=(("customer", "acme"), ("size.n", "2"), ("rush", "true"))) == ["j1"]
        assert await ids(data=(("rush", "false"),)) == ["j2"]
        assert await ids(data=(("tags", '["a"]'),)) == ["j1"]
        assert await ids(data=(("customer", '"acme"'),)) == []
        assert await ids(data=(("nowhere", "x"),)) == []
        assert await ids(data=(("size", "2"),)) == []
        assert await ids(error="corrupt") == ["j1"], "any case"
        assert await ids(error="100%") == ["j1"], "% is a character, not a wildcard"
        assert await ids(error="0% c") == ["j1"]
        assert await ids(error="_1") == ["j2"], "_ too"
        assert await ids(error="t_1") == ["j2"]
        assert await ids(error="tx1") == []
        assert await ids(error="corrupt", data=(("customer", "globex"),)) == []

    async def test_filters_and_cursor_together(self, history: HistoryStorage) -> None:
        await history.record(many_jobs(40))
        where = HistoryFilter(blueprint="a")
        first = await history.list_jobs(where, limit=5)
        assert first.next_cursor is not None
        rest = await history.list_jobs(where, limit=100, cursor=first.next_cursor)
        all_a = await history.list_jobs(where, limit=100)
        assert [j.id for j in first.jobs + rest.jobs] == [j.id for j in all_a.jobs]

    async def test_bad_cursors_and_limits_are_refused(self, history: HistoryStorage) -> None:
        for bad in ("", "nope", "1.5", "nan~x", "~x"):
            with pytest.raises(InvalidCursor):
                await history.list_jobs(cursor=bad)
        with pytest.raises(ValueError, match="limit"):
            await history.list_jobs(limit=0)
        assert Cursor.decode(Cursor(T0 + 0.1, "a~b").encode()) == Cursor(T0 + 0.1, "a~b")

    async def test_counts_by_status_and_state(self, history: HistoryStorage) -> None:
        await history.record(many_jobs(12))
        everything = await history.counts()
        assert everything.total == 12
        assert everything.by_status == {"pending": 4, "finished": 4, "failed": 4}
        assert everything.by_state == {"s0": 3, "s1": 3, "s2": 3, "s3": 3}
        of_a = await history.counts("a")
        assert of_a.total == 6
        assert of_a.by_state == {"s0": 3, "s2": 3}
        assert of_a.by_status == {"pending": 2, "finished": 2, "failed": 2}
        assert sum(of_a.by_state_status.values()) == 6
        assert (await history.counts("nope")).total == 0

    async def test_worker_outcomes_newest_first(self, history: HistoryStorage) -> None:
        job = JobScript("j").created().step().enter("work")
        for i in range(5):
            job.dispatch(f"t{i}", worker="w1").taken(f"t{i}", "w1")
            if i % 2:
                job.result(f"t{i}", "failure", "w1", error={"code": "TRANSIENT_ERROR"})
            else:
                job.result(f"t{i}", "success", "w1")
        job.dispatch("x", worker="w2").taken("x", "w2").result("x", "success", "w2")
        await history.record(job.events)
        outcomes = await history.worker_outcomes("w1", limit=3)
        assert [(o.task_id, o.status, o.error_code, o.succeeded) for o in outcomes] == [
            ("t4", "success", None, True),
            ("t3", "failure", "TRANSIENT_ERROR", False),
            ("t2", "success", None, True),
        ]
        assert [o.at for o in outcomes] == sorted((o.at for o in outcomes), reverse=True)
        assert outcomes[0].job_id == "j"
        assert outcomes[0].task_type == "transcode"
        assert [o.task_id for o in await history.worker_outcomes("w2")] == ["x"]
        assert await history.worker_outcomes("nobody") == []

    # -- retention -------------------------------------------------------------------------------
    async def test_purge_deletes_old_jobs_in_batches(self, history: HistoryStorage) -> None:
        events = list(many_jobs(25, same_time_every=1))  # job i last updated at T0 + i
        await history.record(events)
        await history.record(JobScript("job-0000", at=T0 + 100, state="s0").step().events)  # active again
        assert await history.purge_before(T0 + 10, batch_size=4) == 9  # jobs 1..9
        remaining = {j.id for j in (await history.list_jobs(limit=100)).jobs}
        assert remaining == {"job-0000", *(f"job-{i:04d}" for i in range(10, 25))}
        assert await history.timeline("job-0005") == []
        assert len(await history.timeline("job-0000")) == 2
        assert await history.purge_before(T0 + 10) == 0

    async def test_purge_older_than_days(self, history: HistoryStorage) -> None:
        now = time.time()
        await history.record(JobScript("old", at=now - 40 * 86_400).created().events)
        await history.record(JobScript("new", at=now - 5 * 86_400).created().events)
        with pytest.raises(ValueError, match="days"):
            await history.purge_older_than(-1)
        assert await history.purge_older_than(30) == 1
        assert await history.get_job("old") is None
        assert await history.get_job("new") is not None

    # -- the feed position -----------------------------------------------------------------------
    async def test_a_batch_moves_the_feed_position_only_from_where_it_stands(self, history: HistoryStorage) -> None:
        assert await history.feed_position("redis:a") is None
        first = JobScript("j").created().events
        assert await history.write(records_of(first), FeedStep("redis:a", None, "5-0")) == 1
        assert await history.feed_position("redis:a") == "5-0"
        assert await history.feed_position("redis:b") is None  # each feed its own position
        with pytest.raises(FeedMoved):  # written already (another writer): nothing is written again
            await history.write(records_of(first), FeedStep("redis:a", None, "5-0"))
        assert len(await history.timeline("j")) == 1
        assert await history.write([], FeedStep("redis:a", "5-0", "7-0")) == 0  # entries skipped
        assert await history.feed_position("redis:a") == "7-0"

    async def test_the_database_id_is_given_once(self, history: HistoryStorage) -> None:
        first = await history.database_id()
        assert first
        assert await history.database_id() == first

    # -- through the writer ----------------------------------------------------------------------
    async def test_a_job_through_retry_quarantine_release_and_fan_out(self, history: HistoryStorage) -> None:
        storage = MemoryStorage()
        writer = HistoryWriter(history, storage, batch_size=7, flush_interval_s=0.01)
        await writer.start()
        job, expected = realistic_job()
        try:
            for event in job.events:
                await feed_commit(storage, [event])
                if event.kind == EventKind.TASK_TAKEN:  # not recorded by default, nor worker events
                    progress = Event(EventKind.TASK_PROGRESS, job.job_id, None, job.state, None, {"progress": 0.5})
                    await feed_commit(storage, [progress])
            await feed_commit(storage, [Event(EventKind.WORKER_REGISTERED, data={"worker_id": "w1"})])
            assert await writer.flush()
        finally:
            await writer.stop()
        assert (writer.written, writer.dropped, writer.rejected) == (len(job.events), 0, 0)
        assert await storage.feed_length() == 0

        timeline = await history.timeline(job.job_id)
        assert kinds_and_states(timeline) == expected
        assert [e.seq for e in timeline] == list(range(1, len(expected) + 1))
        assert [e.at for e in timeline] == sorted(e.at for e in timeline)
        dispatches = [e for e in timeline if e.kind == "task_dispatched"]
        dispatched = [(e.data["task_id"], e.data["attempt"], e.worker_id) for e in dispatches]
        assert dispatched == [
            ("t1", 1, "w1"),
            ("t2", 2, "w2"),
            ("t3", 1, "w1"),
            ("p0", 1, "w0"),
            ("p1", 1, "w1"),
            ("p2", 1, "w2"),
        ]
        released = next(e for e in timeline if e.kind == "job_released")
        assert released.data == {"actor": "alice", "params": {"codec": "h264"}}
        assert next(e for e in timeline if e.data.get("task_id") == "t3").data["params"]["codec"] == "h264"
        results = [(e.data["task_id"], e.data["result"]["status"]) for e in timeline if e.kind == "task_result"]
        fanned = [(f"p{i}", "success") for i in range(3)]
        assert results == [("t1", "failure"), ("t2", "failure"), ("t3", "success"), *fanned]
        time_in = {e.state: e.duration_ms for e in timeline if e.kind == STATE_LEFT}
        assert time_in == {
            "start": 2000.0,
            "transcode": 14_000.0,
            "thumbnails": 11_000.0,
            "collect": 2000.0,
            "done": 2000.0,
        }

        row = await history.get_job(job.job_id)
        assert row is not None
        assert (row.status, row.state, row.retry_count, row.error, row.client, row.blueprint_version) == (
            "finished",
            "done",
            1,
            None,
            "acme",
            "v1",
        )
        assert row.last_seq == len(expected)
        assert [o.task_id for o in await history.worker_outcomes("w2")] == ["p2", "t2"]
