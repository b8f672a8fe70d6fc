"""History in SQLite through aiosqlite: a file (WAL), a temporary file (the default) or memory. No server.

One connection, and one lock around every use of it: SQLite has one writer at a time anyway, a
batch is a few milliseconds, and so a read never sees a batch half written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import migrations, sql
from .base import (
    Cursor,
    HistoryCounts,
    HistoryDriverMissing,
    HistoryFilter,
    HistoryStorage,
    JobPage,
    TaskOutcome,
    TimelineEntry,
    as_cursor,
    check_limit,
    counts_from,
    entry_of,
    outcome_of,
    page_of,
)
from .records import EVENT_COLUMNS, JOB_COLUMNS, EventRecord, JobRow, load_json, project

if TYPE_CHECKING:
    import aiosqlite

logger = logging.getLogger(__name__)

MEMORY = ":memory:"
#: SQLite's private temporary database: a file of its own, deleted when the connection closes. Unlike
#: ``:memory:`` its pages leave the process once they outgrow the page cache, so a long-running engine
#: keeps a bounded resident size however many jobs it has seen.
TEMPORARY = ""
#: Ids per ``IN (...)`` list; SQLite allows 32766 variables, this keeps statements small.
_IN_CHUNK = 500

_INSERT_EVENTS = f"INSERT INTO events ({sql.EVENT_SELECT}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
_UPSERT_JOBS = sql.upsert_jobs_sql(f"VALUES ({', '.join('?' * len(JOB_COLUMNS))})")


class SQLiteHistory(HistoryStorage):
    """History in an SQLite database.

    Args:
        path: A file path; ``""`` (the default) for a temporary file that lives as long as the
            connection (history for one run, zero set-up); or ``":memory:"`` for one held in memory.
        busy_timeout_ms: How long to wait for another process holding the file's write lock.
    """

    backend = "sqlite"

    def __init__(self, path: str = TEMPORARY, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SQLiteHistory({self.path!r})"

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._db is not None:
            return
        try:
            import aiosqlite
        except ImportError:
            raise HistoryDriverMissing("SQLite", "aiosqlite") from None

        db = await aiosqlite.connect(self.path, isolation_level=None)  # we issue BEGIN/COMMIT ourselves
        try:
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if self.path == TEMPORARY:
                # Nothing in it outlives the process: no syncs, and the rollback journal kept in memory.
                await db.execute("PRAGMA synchronous = OFF")
                await db.execute("PRAGMA journal_mode = MEMORY")
            elif self.path != MEMORY:
                await db.execute("PRAGMA journal_mode = WAL")
                await db.execute("PRAGMA synchronous = NORMAL")
            self._db = db
            await self._migrate()
        except BaseException:
            self._db = None
            await db.close()
            raise
        where = self.path or "temporary file"
        logger.info("history: SQLite %s, schema version %d", where, migrations.latest(migrations.SQLITE))

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                try:
                    await db.execute("PRAGMA optimize")  # refresh the planner's statistics, as SQLite advises
                finally:
                    await db.close()

    async def ping(self) -> None:
        await self._fetch("SELECT 1", ())

    async def schema_version(self) -> int:
        rows = await self._fetch("SELECT MAX(version) FROM schema_version", ())
        return int(rows[0][0] or 0)

    async def _migrate(self) -> None:
        async with self._lock:
            db = self._connection()
            await db.execute(migrations.SCHEMA_VERSION_TABLE)
            applied = {row[0] for row in await db.execute_fetchall("SELECT version FROM schema_version")}
            for migration in migrations.pending(migrations.SQLITE, applied):
                await db.execute("BEGIN IMMEDIATE")
                try:
                    # Read again under the write lock: another process may have just applied it.
                    query = "SELECT 1 FROM schema_version WHERE version = ?"
                    if await db.execute_fetchall(query, (migration.version,)):
                        await db.execute("COMMIT")
                        continue
                    for statement in migration.statements:
                        await db.execute(statement)
                    await db.execute(
                        "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                        (migration.version, migration.name, time.time()),
                    )
                    await db.execute("COMMIT")
                except BaseException:
                    await self._rollback(db)
                    raise
                logger.info("history: applied SQLite migration %d (%s)", migration.version, migration.name)

    # -- writing ---------------------------------------------------------------------------------
    async def write(self, records: Sequence[EventRecord]) -> int:
        if not records:
            return 0
        async with self._lock:
            db = self._connection()
            await db.execute("BEGIN IMMEDIATE")
            try:
                rows = await self._job_rows(db, {r.job_id for r in records})
                lines = project(list(records), rows)
                await db.executemany(_INSERT_EVENTS, lines)
                touched = {line[0] for line in lines}
                await db.executemany(_UPSERT_JOBS, [rows[job_id].as_tuple() for job_id in touched])
                await db.execute("COMMIT")
            except BaseException:
                await self._rollback(db)
                raise
        return len(lines)

    @staticmethod
    async def _job_rows(db: aiosqlite.Connection, job_ids: Iterable[str]) -> dict[str, JobRow]:
        ids = list(job_ids)
        rows: dict[str, JobRow] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            query = f"SELECT {sql.JOB_SELECT} FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})"
            for values in await db.execute_fetchall(query, chunk):
                rows[values[0]] = JobRow(*values)
        return rows

    # -- reading ---------------------------------------------------------------------------------
    async def timeline(self, job_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[TimelineEntry]:
        p = sql.Params("qmark")
        query = sql.timeline_query(job_id, after_seq, limit, p)
        return [entry_of(values) for values in await self._fetch(query, p.values)]

    async def get_job(self, job_id: str) -> JobRow | None:
        rows = await self._fetch(f"SELECT {sql.JOB_SELECT} FROM jobs WHERE id = ?", (job_id,))
        return JobRow(*rows[0]) if rows else None

    async def list_jobs(
        self, where: HistoryFilter | None = None, limit: int = 50, cursor: Cursor | str | None = None
    ) -> JobPage:
        check_limit(limit)
        p = sql.Params("qmark")
        query = sql.list_jobs_query(where or HistoryFilter(), as_cursor(cursor), limit + 1, p)
        jobs = [JobRow(*values) for values in await self._fetch(query, p.values)]
        return page_of(jobs, limit)

    async def counts(self, blueprint: str | None = None) -> HistoryCounts:
        p = sql.Params("qmark")
        query = sql.counts_query(blueprint, p)
        return counts_from((state, status, n) for state, status, n in await self._fetch(query, p.values))

    async def worker_outcomes(self, worker_id: str, limit: int = 100) -> list[TaskOutcome]:
        check_limit(limit)
        p = sql.Params("qmark")
        query = sql.worker_outcomes_query(worker_id, limit, p)
        return [outcome_of(job_id, at, load_json(data)) for job_id, at, data in await self._fetch(query, p.values)]

    # -- retention -------------------------------------------------------------------------------
    async def purge_before(self, cutoff_at: float, batch_size: int = 1000) -> int:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        deleted = 0
        while True:
            async with self._lock:
                db = self._connection()
                await db.execute("BEGIN IMMEDIATE")
                try:
                    p = sql.Params("qmark")
                    query = sql.purge_candidates_query(cutoff_at, batch_size, p)
                    ids = [row[0] for row in await db.execute_fetchall(query, p.values)]
                    for start in range(0, len(ids), _IN_CHUNK):
                        chunk = ids[start : start + _IN_CHUNK]
                        marks = ", ".join("?" * len(chunk))
                        await db.execute(f"DELETE FROM events WHERE job_id IN ({marks})", chunk)
                        await db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", chunk)
                    await db.execute("COMMIT")
                except BaseException:
                    await self._rollback(db)
                    raise
            deleted += len(ids)
            if len(ids) < batch_size:
                return deleted
            await asyncio.sleep(0)  # let the writer in between batches

    # -- helpers ---------------------------------------------------------------------------------
    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("history is not open; call `await history.open()` first")
        return self._db

    async def _fetch(self, query: str, params: Sequence[Any]) -> list[Any]:
        async with self._lock:
            return list(await self._connection().execute_fetchall(query, params))

    @staticmethod
    async def _rollback(db: aiosqlite.Connection) -> None:
        try:
            await db.execute("ROLLBACK")
        except Exception:  # no transaction left to roll back (SQLite ended it on the error)
            logger.debug("history: rollback after a failed SQLite transaction failed", exc_info=True)
