"""Benchmark (not a test): the studio's history queries with 100k jobs and 1M timeline lines.

Fills a history database through the same write path the writer uses (``HistoryStorage.write``,
batches of one transaction), then times the queries the studio runs: the first page of the job list
and a deep one (keyset cursor 90k jobs in), filtered pages, a job's timeline, counts, and a worker's
recent outcomes. Each query runs ``--repeat`` times; the median and the slowest are printed.

    .venv/bin/python benchmarks/history_list.py                    # SQLite file in a temp dir
    HISTORY_BENCH_POSTGRES_DSN=postgresql://u@host/db .venv/bin/python benchmarks/history_list.py
    .venv/bin/python benchmarks/history_list.py --start-postgres   # a throwaway server (tests/support)

The PostgreSQL database given by DSN must be empty or a previous run's: its tables are emptied.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from avtomatika.events import Event, EventKind
from avtomatika.history import (
    Cursor,
    EventRecord,
    HistoryFilter,
    HistoryStorage,
    PostgresHistory,
    SQLiteHistory,
)

DSN_ENV = "HISTORY_BENCH_POSTGRES_DSN"
TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
BLUEPRINTS = ("video", "audio", "ocr", "billing", "etl")
WORKERS = tuple(f"worker-{i}" for i in range(20))
DAY_S = 86_400.0


def job_events(i: int, rng: random.Random, t0: float) -> list[Event]:
    """One job's events (7 published, 10 timeline lines with the synthetic ``state_left`` ones)."""
    job_id = f"{rng.getrandbits(128):032x}"
    blueprint = BLUEPRINTS[i % len(BLUEPRINTS)]
    at = t0 + i * (30 * DAY_S / 100_000) + rng.random()  # 100k jobs over 30 days
    worker = rng.choice(WORKERS)
    roll = rng.random()
    ok = roll < 0.8

    def ev(kind: EventKind, in_state: str, status: str | None, dt: float, **data: Any) -> Event:
        return Event(kind, job_id, blueprint if status else None, in_state, status, data, at=at + dt)

    events = [
        ev(EventKind.JOB_CREATED, "start", "pending", 0, initial_data={"n": i, "path": f"/in/{i}"}, client="acme"),
        ev(EventKind.STEP_FINISHED, "work", "running", 0.01, state="start", duration_ms=1.2),
        ev(EventKind.STATE_ENTERED, "work", "running", 0.01, previous="start"),
        ev(
            EventKind.TASK_DISPATCHED,
            "work",
            "waiting_for_worker",
            0.02,
            task_id=f"t{i}",
            task_type=blueprint,
            params={"quality": "high"},
            attempt=1,
            worker_id=worker,
        ),
    ]
    if roll > 0.97:  # still waiting for its worker
        return events
    error = None if ok else {"code": "PERMANENT_ERROR", "message": "bad input"}
    result = {"status": "success" if ok else "failure", "data": {"out": f"/out/{i}"}, "error": error}
    events.append(ev(EventKind.TASK_RESULT, "work", None, 3 + rng.random() * 60, task_id=f"t{i}", worker_id=worker,
                     task_type=blueprint, result=result))  # fmt: skip
    end = events[-1].at - at + 0.01
    if ok:
        events.append(ev(EventKind.STATE_ENTERED, "done", "running", end, previous="work"))
        events.append(ev(EventKind.JOB_FINISHED, "done", "finished", end + 0.01, error=None))
    elif roll < 0.9:
        events.append(ev(EventKind.STATE_ENTERED, "failed", "running", end, previous="work"))
        events.append(ev(EventKind.JOB_FAILED, "failed", "failed", end + 0.01, error="PERMANENT_ERROR: bad input"))
    else:
        events.append(ev(EventKind.JOB_QUARANTINED, "work", "quarantined", end, error="PERMANENT_ERROR: bad input"))
    return events


def batches(jobs: int, per_batch: int, seed: int) -> Iterator[list[EventRecord]]:
    rng = random.Random(seed)
    t0 = time.time() - 30 * DAY_S
    batch: list[EventRecord] = []
    for i in range(jobs):
        for event in job_events(i, rng, t0):
            record = EventRecord.capture(event)
            assert record is not None
            batch.append(record)
        if len(batch) >= per_batch:
            yield batch
            batch = []
    if batch:
        yield batch


async def fill(history: HistoryStorage, jobs: int, per_batch: int) -> tuple[int, float]:
    started = time.perf_counter()
    lines = 0
    for n, batch in enumerate(batches(jobs, per_batch, seed=42), 1):
        lines += await history.write(batch)
        if n % 20 == 0:
            print(f"  ... {lines:,} lines", file=sys.stderr)
    return lines, time.perf_counter() - started


async def timed(label: str, repeat: int, query: Callable[[], Awaitable[Any]]) -> Any:
    times = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await query()
        times.append((time.perf_counter() - started) * 1000)
    print(f"  {label:<48} median {statistics.median(times):8.2f} ms   max {max(times):8.2f} ms")
    return result


async def run_queries(history: HistoryStorage, jobs: int, repeat: int) -> None:
    first = await timed("list: first page (50)", repeat, lambda: history.list_jobs(limit=50))
    walk_started = time.perf_counter()
    cursor: Cursor | None = None
    pages = max(1, jobs * 9 // 10 // 1000)  # 90% of the way down, 1000 jobs a page
    for _ in range(pages):
        cursor = (await history.list_jobs(limit=1000, cursor=cursor)).next_cursor
    walk_ms = (time.perf_counter() - walk_started) * 1000
    print(f"  {f'list: walk {pages} pages of 1000 (to {pages}k deep)':<48} total  {walk_ms:8.1f} ms")
    deep = cursor
    label = f"list: deep page (50, {pages}k jobs in)"
    await timed(label, repeat, lambda: history.list_jobs(limit=50, cursor=deep))
    filters = {
        "list: blueprint": HistoryFilter(blueprint="video"),
        "list: status=failed": HistoryFilter(status="failed"),
        "list: blueprint + status=quarantined (rare)": HistoryFilter(blueprint="ocr", status="quarantined"),
        "list: blueprint + state": HistoryFilter(blueprint="audio", state="done"),
        "list: last 24 h": HistoryFilter(created_after=time.time() - DAY_S),
        "list: id prefix": HistoryFilter(id_prefix=first.jobs[7].id[:5]),
        "list: status=waiting_for_worker (deep cursor)": HistoryFilter(status="waiting_for_worker"),
    }
    for label, where in filters.items():
        cursor_for = deep if "deep" in label else None
        await timed(label, repeat, lambda w=where, c=cursor_for: history.list_jobs(w, limit=50, cursor=c))
    job_id = first.jobs[3].id
    timeline = await timed("timeline of one job", repeat, lambda: history.timeline(job_id))
    assert timeline, "the job has a timeline"
    await timed("counts of one blueprint", repeat, lambda: history.counts("video"))
    await timed("counts of all blueprints", repeat, lambda: history.counts())
    await timed("worker outcomes (100 latest)", repeat, lambda: history.worker_outcomes(WORKERS[3], 100))


async def bench(history: HistoryStorage, label: str, jobs: int, per_batch: int, repeat: int) -> None:
    print(f"\n== {label}: {jobs:,} jobs")
    async with history:
        lines, fill_s = await fill(history, jobs, per_batch)
        rate = lines / fill_s
        print(f"  filled {lines:,} timeline lines in {fill_s:.1f} s ({rate:,.0f} lines/s, {per_batch} per batch)")
        if isinstance(history, PostgresHistory):  # what autovacuum would do soon after a bulk load
            async with history._connection() as conn:
                await conn.execute("ANALYZE")
        await run_queries(history, jobs, repeat)


async def empty_postgres(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS events, jobs, schema_version")
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000, help="events per write transaction")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--sqlite-path", type=Path, help="keep the SQLite file here (default: a temp dir)")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--start-postgres", action="store_true", help="run a throwaway PostgreSQL server")
    args = parser.parse_args()

    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            path = args.sqlite_path or Path(tmp) / "history.db"
            path.unlink(missing_ok=True)
            await bench(SQLiteHistory(str(path)), f"SQLite file {path}", args.jobs, args.batch, args.repeat)
            print(f"  file size: {path.stat().st_size / 1e6:.0f} MB")

    with contextlib.ExitStack() as stack:
        dsn = os.environ.get(DSN_ENV)
        if args.start_postgres:
            sys.path.insert(0, str(TESTS_DIR))
            from support.postgres_server import running_postgres

            dsn = stack.enter_context(running_postgres()).create_database("history_bench")
        if dsn:
            await empty_postgres(dsn)
            await bench(PostgresHistory(dsn), "PostgreSQL", args.jobs, args.batch, args.repeat)
        else:
            print(f"\n(PostgreSQL skipped: set {DSN_ENV} or pass --start-postgres)")


if __name__ == "__main__":
    asyncio.run(main())
