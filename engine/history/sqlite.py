"""History in SQLite: a file (WAL), a temporary file (the default) or memory. No server.

Python's own ``sqlite3`` on one thread of the history's own: every call (a batch written, a page
read) is one function run there, so a batch is one hand-off between the event loop and the thread
however many statements it takes. (Through aiosqlite each statement was a hand-off, and each waited
for a turn of a busy event loop: under load the writer fell tens of thousands of events behind.)
One thread also means one connection used by one caller at a time, so a read never sees a batch half
written; SQLite has one writer at a time anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ..feed import dump_json
from ..models import new_id
from . import migrations, sql
from .base import FeedMoved, FeedStep, LostJob, import_driver
from .records import EVENT_COLUMNS, JOB_COLUMNS, EventRecord, JobRecord, project
from .relational import SqlHistory

if TYPE_CHECKING:
    import sqlite3

logger = logging.getLogger(__name__)
T = TypeVar("T")

MEMORY = ":memory:"
#: SQLite's private temporary database: a file of its own, deleted when the connection closes. Unlike
#: ``:memory:`` its pages leave the process once they outgrow the page cache, so a long-running engine
#: keeps a bounded resident size however many jobs it has seen.
TEMPORARY = ""
#: The page cache of a temporary database, in KiB (SQLite's default is 2 MiB). Its file's pages stay in
#: the operating system's cache, a read away (a few µs): writing 10,000 jobs' events cost within a few
#: per cent of the time with 2 MiB, and the process keeps 1.5 MiB less.
_TEMPORARY_CACHE_KIB = 512
#: Ids per ``IN (...)`` list of a purge; SQLite allows 32766 variables, this keeps statements small.
_IN_CHUNK = 500
#: Rows written by one INSERT: 128, 64... 1, the largest that fits what is left. Every statement SQLite
#: runs gives up the GIL and must win it back; while the event loop is busy it wins it only every 5 ms
#: (``sys.getswitchinterval()``), so a statement per row (``executemany``) left the writer thousands
#: of events behind under load. Eight sizes keep the compiled statements few (and small). (Padding a
#: short chunk with rows the statement skips, to compile one size only, cost more CPU than it saved.)
_INSERT_SIZES = (128, 64, 32, 16, 8, 4, 2, 1)


@functools.cache
def _insert_events(rows: int) -> str:
    one = f"({', '.join('?' * len(EVENT_COLUMNS))})"
    return f"INSERT INTO events ({sql.EVENT_SELECT}) VALUES {', '.join([one] * rows)}"


@functools.cache
def _upsert_jobs(rows: int) -> str:
    one = f"({', '.join('?' * len(JOB_COLUMNS))})"
    return sql.upsert_jobs_sql(f"VALUES {', '.join([one] * rows)}")


#: A batch's jobs are looked up in one statement, whatever their number: their ids reach SQLite as
#: one JSON array, read with ``json_each`` (as PostgreSQL's history reads arrays with ``unnest``).
#: Lists of 128 ids, padded with NULLs to compile one statement only, took a statement per 128 jobs.
_SELECT_JOBS = f"SELECT {sql.JOB_SELECT} FROM jobs WHERE id IN (SELECT value FROM json_each(?))"


class SQLiteHistory(SqlHistory):
    """History in an SQLite database.

    Args:
        path: A file path; ``""`` (the default) for a temporary file that lives as long as the
            connection (history for one run, zero set-up); or ``":memory:"`` for one held in memory.
        busy_timeout_ms: How long to wait for another process holding the file's write lock.
    """

    backend = "sqlite"
    placeholders = "qmark"

    def __init__(self, path: str = TEMPORARY, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return f"SQLiteHistory({self.path!r})"

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._db is not None:
            return
        sqlite3 = import_driver("SQLite", "sqlite3", "a Python built with its sqlite3 module")
        _adapt_none_quickly(sqlite3)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avtomatika-history")
        try:
            self._db = await self._run(self._connect, sqlite3)
            await self._run(self._migrate)
        except BaseException:
            await self.close()
            raise
        where = self.path or "temporary file"
        logger.info("history: SQLite %s, schema version %d", where, migrations.latest(migrations.SQLITE))

    def _connect(self, sqlite3: Any) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. Used only on self._thread.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            if self.path == TEMPORARY:
                # Nothing in it outlives the process: no syncs. The rollback journal is a temporary file
                # too (kept between transactions): held in memory, it grew to a copy of every page a
                # batch changed, and the allocator kept that peak (~3 MB) for good.
                db.execute("PRAGMA synchronous = OFF")
                db.execute("PRAGMA journal_mode = PERSIST")
                db.execute(f"PRAGMA cache_size = {-_TEMPORARY_CACHE_KIB}")
            elif self.path != MEMORY:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        db, self._db = self._db, None
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            if db is not None:
                await asyncio.get_running_loop().run_in_executor(thread, _optimize_and_close, db)
        finally:
            thread.shutdown(wait=False)

    def _migrate(self) -> None:
        db = self._connection()
        db.execute(migrations.SCHEMA_VERSION_TABLE)
        applied = {row[0] for row in db.execute("SELECT version FROM schema_version")}
        for migration in migrations.pending(migrations.SQLITE, applied):
            with _transaction(db):
                # Read again under the write lock: another process may have just applied it.
                if db.execute("SELECT 1 FROM schema_version WHERE version = ?", (migration.version,)).fetchone():
                    continue
                for statement in migration.statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )
            logger.info("history: applied SQLite migration %d (%s)", migration.version, migration.name)

    async def database_id(self) -> str:
        return await self._run(self._database_id)

    def _database_id(self) -> str:
        db = self._connection()
        with _transaction(db):
            db.execute("INSERT OR IGNORE INTO history_meta (name, value) VALUES ('database_id', ?)", (new_id(),))
            row = db.execute("SELECT value FROM history_meta WHERE name = 'database_id'").fetchone()
        return str(row[0])

    # -- writing ---------------------------------------------------------------------------------
    async def write(self, records: Sequence[EventRecord], feed: FeedStep | None = None) -> int:
        if not records and feed is None:
            return 0
        return await self._run(self._write, list(records), feed)

    def _write(self, records: list[EventRecord], feed: FeedStep | None) -> int:
        """One batch in one transaction (on the history's thread)."""
        db = self._connection()
        with _transaction(db):
            if feed is not None:
                _move_position(db, feed)
            rows = _job_rows(db, {r.job_id for r in records})
            lines = project(records, rows, feed.feed if feed is not None else None)
            _insert(db, _insert_events, lines)
            touched = {line[0] for line in lines}
            _insert(db, _upsert_jobs, [rows[job_id].as_tuple() for job_id in touched])
        return len(lines)

    # -- what outlives jobs ------------------------------------------------------------------------
    async def save_graph(self, blueprint: str, version: str, graph: dict[str, Any]) -> None:
        statement = sql.save_graph_sql("?", "?", "?", "?")
        await self._run(self._execute, statement, (blueprint, version, dump_json(graph), time.time()))

    async def mark_lost(self, at: float, keep_feed: str) -> int:
        return await self._run(self._mark_lost, at, keep_feed)

    def _mark_lost(self, at: float, keep_feed: str) -> int:
        db = self._connection()
        with _transaction(db):
            p = sql.Params("qmark")
            lost = [LostJob(*values) for values in db.execute(sql.lost_candidates_query(keep_feed, p), p.values)]
            _insert(db, _insert_events, [job.line(at) for job in lost])
            db.executemany(sql.mark_lost_sql("?", "?", "?"), [(job.error, at, job.id) for job in lost])
        if lost:
            logger.warning("history: %d jobs were lost with the engine that held them in memory", len(lost))
        return len(lost)

    def _execute(self, statement: str, params: Sequence[Any]) -> None:
        db = self._connection()
        with _transaction(db):
            db.execute(statement, params)

    # -- retention -------------------------------------------------------------------------------
    async def purge_before(self, cutoff_at: float, batch_size: int = 1000) -> int:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        deleted = 0
        while True:
            count = await self._run(self._purge_batch, cutoff_at, batch_size)
            deleted += count
            if count < batch_size:
                return deleted
            await asyncio.sleep(0)  # let the writer in between batches

    def _purge_batch(self, cutoff_at: float, batch_size: int) -> int:
        db = self._connection()
        with _transaction(db):
            p = sql.Params("qmark")
            query = sql.purge_candidates_query(cutoff_at, batch_size, p)
            ids = [row[0] for row in db.execute(query, p.values)]
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                db.execute(f"DELETE FROM events WHERE job_id IN ({marks})", chunk)
                db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", chunk)
        return len(ids)

    # -- helpers ---------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("history is not open; call `await history.open()` first")
        return self._db

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the history's thread."""
        if self._thread is None:
            raise RuntimeError("history is not open; call `await history.open()` first")
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def _fetch(self, query: str, params: Sequence[Any]) -> list[Any]:
        return await self._run(self._fetch_now, query, params)

    def _fetch_now(self, query: str, params: Sequence[Any]) -> list[Any]:
        return self._connection().execute(query, params).fetchall()


def _adapt_none_quickly(sqlite3: Any) -> None:
    """Register an adapter for None, unless the application registered one.

    The ``sqlite3`` module binds an exact int, float or str as it is, and asks every other value
    (None among them) for an adapter: on CPython 3.11, with none registered for its type, that is two
    attribute lookups that fail with a formatted AttributeError. History's lines and job rows are
    full of NULLs (no worker, no error, no duration...), and those failures were 12 % of the history
    thread's instructions. An adapter for None is found in one dict lookup, and binds NULL as before.
    """
    key = (type(None), sqlite3.PrepareProtocol)
    if key not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _NULL)


#: The adapter of None: an empty dict's ``get`` answers None for None, with no Python frame to run
#: (a line binds two or three NULLs, each a call of the adapter).
_NULL: Callable[[None], None] = {}.get


def _move_position(db: sqlite3.Connection, feed: FeedStep) -> None:
    """History's position in ``feed.feed`` from ``feed.after`` to ``feed.through``, or FeedMoved."""
    moved = db.execute(
        "UPDATE feed_positions SET position = ? WHERE feed = ? AND position = ?", (feed.through, feed.feed, feed.after)
    )
    if moved.rowcount == 1:
        return  # the usual case: one statement
    found = _feed_position(db, feed.feed)
    if found != feed.after:
        raise FeedMoved(feed.feed, feed.after, found)
    db.execute("INSERT INTO feed_positions (feed, position) VALUES (?, ?)", (feed.feed, feed.through))


def _feed_position(db: sqlite3.Connection, feed: str) -> str | None:
    row = db.execute("SELECT position FROM feed_positions WHERE feed = ?", (feed,)).fetchone()
    return str(row[0]) if row is not None else None


def _job_rows(db: sqlite3.Connection, job_ids: Iterable[str]) -> dict[str, JobRecord]:
    # Text, not bytes: SQLite's JSON functions refuse a BLOB.
    ids = orjson.dumps(list(job_ids)).decode()
    return {values[0]: JobRecord(*values) for values in db.execute(_SELECT_JOBS, (ids,))}


def _insert(db: sqlite3.Connection, statement: Callable[[int], str], rows: Sequence[Sequence[Any]]) -> None:
    """``rows`` written by INSERTs of several rows each (see ``_INSERT_SIZES``)."""
    start = 0
    while start < len(rows):
        size = next(n for n in _INSERT_SIZES if n <= len(rows) - start)
        chunk = rows[start : start + size]
        db.execute(statement(size), [value for row in chunk for value in row])
        start += size


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock at once) ... ``COMMIT``, or ``ROLLBACK`` on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        try:
            db.execute("ROLLBACK")
        except Exception:  # no transaction left to roll back (SQLite ended it on the error)
            logger.debug("history: rollback after a failed SQLite transaction failed", exc_info=True)
        raise
    db.execute("COMMIT")


def _optimize_and_close(db: sqlite3.Connection) -> None:
    try:
        db.execute("PRAGMA optimize")  # refresh the planner's statistics, as SQLite advises
    finally:
        db.close()
