"""History in PostgreSQL through asyncpg, for several engine processes and long retention.

A batch is one transaction of four round trips: take the writers' advisory lock (so two engines'
writers number one job's events one after the other), read the batch's job rows, insert the lines
and upsert the rows, each with one statement over ``unnest`` arrays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ..feed import dump_json
from ..models import new_id
from . import migrations, sql
from .base import FeedMoved, FeedStep, LostJob, import_driver
from .records import EVENT_COLUMNS, JOB_COLUMNS, EventLine, EventRecord, JobRecord, project
from .relational import SqlHistory

if TYPE_CHECKING:
    import asyncpg  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)

#: Advisory lock keys (any bigint; these spell "avtomatika history write/migrate" loosely).
WRITE_LOCK_KEY = 0x6176_6874_7772_0001
MIGRATE_LOCK_KEY = 0x6176_6874_6D67_0001

_EVENT_TYPES = ("text", "int4", "float8", "text", "text", "text", "text", "float8", "text")
_JOB_TYPES = {
    "id": "text",
    "blueprint": "text",
    "blueprint_version": "text",
    "status": "text",
    "state": "text",
    "client": "text",
    "parent_job_id": "text",
    "created_at": "float8",
    "updated_at": "float8",
    "finished_at": "float8",
    "state_entered_at": "float8",
    "error": "text",
    "retry_count": "int4",
    "last_seq": "int4",
    "feed": "text",
}


def _unnest(types: Sequence[str], columns: Sequence[str], casts: dict[str, str] | None = None) -> str:
    """``SELECT ... FROM unnest($1::t1[], $2::t2[], ...) AS u(c1, c2, ...)``, casting some columns."""
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
    picks = ", ".join(f"{c}::{casts[c]}" if casts and c in casts else c for c in columns)
    return f"SELECT {picks} FROM unnest({arrays}) AS u({', '.join(columns)})"


_INSERT_EVENTS = f"INSERT INTO events ({sql.EVENT_SELECT}) {_unnest(_EVENT_TYPES, EVENT_COLUMNS, {'data': 'jsonb'})}"
_UPSERT_JOBS = sql.upsert_jobs_sql(_unnest([_JOB_TYPES[c] for c in JOB_COLUMNS], JOB_COLUMNS))


def redact(dsn: str) -> str:
    """The DSN without its password, for logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresHistory(SqlHistory):
    """History in a PostgreSQL database.

    Args:
        dsn: ``postgresql://user:password@host:port/database``.
        min_size: Connections kept open.
        max_size: Most connections at once (one writer, the rest for the studio's reads).
        command_timeout_s: A statement taking longer fails (the writer retries its batch later).
        connect_timeout_s: How long to wait to connect before failing.
    """

    backend = "postgresql"
    placeholders = "numeric"

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        command_timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self.command_timeout_s = command_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresHistory({redact(self.dsn)!r})"

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        pool = await import_driver("PostgreSQL", "asyncpg").create_pool(
            self.dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            command_timeout=self.command_timeout_s,
            timeout=self.connect_timeout_s,
        )
        try:
            await self._migrate(pool)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        version = migrations.latest(migrations.POSTGRES)
        logger.info("history: PostgreSQL %s, schema version %d", redact(self.dsn), version)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=self.connect_timeout_s)
            except (TimeoutError, OSError):
                pool.terminate()

    @staticmethod
    async def _migrate(pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn, conn.transaction():
            # Engines starting together: one migrates, the others wait and then find nothing to do.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK_KEY)
            await conn.execute(migrations.SCHEMA_VERSION_TABLE)
            applied = {row[0] for row in await conn.fetch("SELECT version FROM schema_version")}
            for migration in migrations.pending(migrations.POSTGRES, applied):
                for statement in migration.statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    time.time(),
                )
                logger.info("history: applied PostgreSQL migration %d (%s)", migration.version, migration.name)

    async def database_id(self) -> str:
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO history_meta (name, value) VALUES ('database_id', $1) ON CONFLICT DO NOTHING", new_id()
            )
            return str(await conn.fetchval("SELECT value FROM history_meta WHERE name = 'database_id'"))

    # -- writing ---------------------------------------------------------------------------------
    async def write(self, records: Sequence[EventRecord], feed: FeedStep | None = None) -> int:
        if not records and feed is None:
            return 0
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK_KEY)
            if feed is not None:
                await _move_position(conn, feed)
            found = await conn.fetch(
                f"SELECT {sql.JOB_SELECT} FROM jobs WHERE id = ANY($1::text[])", list({r.job_id for r in records})
            )
            rows = {values[0]: JobRecord(*values) for values in found}
            lines = project(list(records), rows, feed.feed if feed is not None else None)
            await conn.execute(_INSERT_EVENTS, *_columns([_clean_line(line) for line in lines], len(EVENT_COLUMNS)))
            touched = {line[0] for line in lines}
            job_values = [_clean(rows[job_id].as_tuple()) for job_id in touched]
            await conn.execute(_UPSERT_JOBS, *_columns(job_values, len(JOB_COLUMNS)))
        return len(lines)

    # -- what outlives jobs ------------------------------------------------------------------------
    async def save_graph(self, blueprint: str, version: str, graph: dict[str, Any]) -> None:
        statement = sql.save_graph_sql("$1", "$2", "$3", "$4")
        async with self._connection() as conn:
            await conn.execute(statement, blueprint, version, dump_json(graph), time.time())

    async def mark_lost(self, at: float, keep_feed: str) -> int:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK_KEY)  # no writer numbers them meanwhile
            p = sql.Params("numeric")
            lost = [LostJob(*values) for values in await conn.fetch(sql.lost_candidates_query(keep_feed, p), *p.values)]
            if lost:
                lines = [_clean_line(job.line(at)) for job in lost]  # type: ignore[arg-type]
                await conn.execute(_INSERT_EVENTS, *_columns(lines, len(EVENT_COLUMNS)))
                await conn.executemany(sql.mark_lost_sql("$1", "$2", "$3"), [(job.error, at, job.id) for job in lost])
        if lost:
            logger.warning("history: %d jobs were lost with the engine that held them in memory", len(lost))
        return len(lost)

    # -- retention -------------------------------------------------------------------------------
    async def purge_before(self, cutoff_at: float, batch_size: int = 1000) -> int:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        deleted = 0
        while True:
            async with self._connection() as conn, conn.transaction():
                # The writers' lock: a job getting an event while it is purged is either purged with
                # all its lines or kept with all of them, never left with a row missing its start.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK_KEY)
                p = sql.Params("numeric")
                query = sql.purge_candidates_query(cutoff_at, batch_size, p)
                ids = [row[0] for row in await conn.fetch(query, *p.values)]
                if ids:
                    await conn.execute("DELETE FROM events WHERE job_id = ANY($1::text[])", ids)
                    await conn.execute("DELETE FROM jobs WHERE id = ANY($1::text[])", ids)
            deleted += len(ids)
            if len(ids) < batch_size:
                return deleted

    # -- helpers ---------------------------------------------------------------------------------
    async def _fetch(self, query: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        async with self._connection() as conn:
            return await conn.fetch(query, *params)

    def _connection(self) -> Any:
        """``async with`` a pooled connection (the pool reconnects after the server restarts)."""
        if self._pool is None:
            raise RuntimeError("history is not open; call `await history.open()` first")
        return self._pool.acquire()


async def _move_position(conn: Any, feed: FeedStep) -> None:
    """History's position in ``feed.feed`` from ``feed.after`` to ``feed.through``, or FeedMoved
    (under the writers' lock, so the read and the write see the same row)."""
    moved = await conn.execute(
        "UPDATE feed_positions SET position = $1 WHERE feed = $2 AND position = $3",
        feed.through,
        feed.feed,
        feed.after,
    )
    if moved == "UPDATE 1":
        return  # the usual case: one statement
    found = await conn.fetchval("SELECT position FROM feed_positions WHERE feed = $1", feed.feed)
    if found != feed.after:
        raise FeedMoved(feed.feed, feed.after, found)
    await conn.execute("INSERT INTO feed_positions (feed, position) VALUES ($1, $2)", feed.feed, feed.through)


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to one list per column, for ``unnest``."""
    return [[row[i] for row in rows] for i in range(width)]


def _clean(values: Sequence[Any]) -> tuple[Any, ...]:
    """PostgreSQL text cannot hold NUL characters: replace them."""
    return tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) and "\x00" in v else v for v in values)


def _clean_line(line: EventLine) -> tuple[Any, ...]:
    values = _clean(line)
    data = values[-1]
    if "\\u0000" in data:  # JSON's escape for NUL, which jsonb refuses
        values = (*values[:-1], data.replace("\\u0000", "\\ufffd"))
    return values
