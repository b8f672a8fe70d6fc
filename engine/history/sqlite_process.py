"""SQLite history's own process: ``python -m avtomatika.history.sqlite_process``, a child of the engine.

:class:`~avtomatika.history.sqlite.SQLiteHistory` starts it and hands it every database call, so
history's CPU and memory (SQLite's page cache, the projection of each batch, the JSON of the feed
entries) leave the engine's process and its thread no longer competes with the event loop for the
GIL, as PostgreSQL history's work happens in the PostgreSQL server. It holds the one connection and
serves one call at a time, so a read never sees a batch half written.

The wire: the engine writes a request to the process's stdin, ``(name, args)``, and reads the reply
on its stdout, ``(ok, value)`` where ``value`` is the call's result or the exception it raised; each
a frame of a 4-byte big-endian length and a pickle (both ends are ours, over private pipes). An
exception that does not pickle arrives as a ``RuntimeError`` carrying its repr. A batch of the
history feed arrives as the entries' bytes: they are read, projected and written here.

The process ends when its stdin does: the engine closed it, or the engine ended, whatever ended it
(its SIGKILL included), so no process outlives its engine; then ``PRAGMA optimize`` and the
connection closes. Ctrl-C and a supervisor's SIGTERM reach the engine's whole process group: they
are ignored here, so the engine can still write its last batch as it stops.

This module imports only what the process needs (sqlite3 when it opens the database, orjson, the
projection, the SQL and the migrations): with :mod:`avtomatika` and :mod:`avtomatika.history`
resolving their names lazily, the process is ready in a few tens of milliseconds of CPU. The engine
imports it too, for :func:`send`, :func:`receive` and the names of the calls, never sqlite3.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pickle
import select
import signal
import struct
import sys
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from . import migrations, sql
from .base import FeedMoved, FeedStep, FeedWritten, HistoryOpenFailed, LostJob, import_driver
from .records import EVENT_COLUMNS, JOB_COLUMNS, EventRecord, JobRecord, project, read_entries

if TYPE_CHECKING:
    import sqlite3

#: What ``python -m`` runs.
MODULE = __spec__.name if __spec__ is not None else "avtomatika.history.sqlite_process"
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
#: Rows written by one INSERT: 128, 64... 1, the largest that fits what is left. A statement per row
#: (``executemany``) cost several times the CPU (and, when this ran on a thread of the engine, each
#: statement gave up the GIL and waited to win it back from the event loop). Eight sizes keep the
#: compiled statements few (and small). (Padding a short chunk with rows the statement skips, to
#: compile one size only, cost more CPU than it saved.)
_INSERT_SIZES = (128, 64, 32, 16, 8, 4, 2, 1)
#: ``python -m ... --spare-for=S``: a process started ahead of the next ``open``, which ends when none
#: came within ``S`` seconds.
SPARE_FLAG = "--spare-for="
#: A frame's length: 4 bytes, big-endian.
_LENGTH = struct.Struct(">I")


# -- the wire --------------------------------------------------------------------------------------
def send(stream: BinaryIO, message: Any) -> None:
    """Write ``message`` to ``stream`` as one frame."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(body)))
    stream.write(body)
    stream.flush()


def receive(stream: BinaryIO) -> Any:
    """The next frame's message; EOFError when the stream ends (the other end closed or died)."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise EOFError("the stream ended")
    (size,) = _LENGTH.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        raise EOFError("the stream ended within a frame")
    return pickle.loads(body)


def portable(exc: Exception) -> Exception:
    """``exc`` if it comes back as itself from a pickle, else a RuntimeError carrying its repr."""
    try:
        pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        return RuntimeError(f"history's SQLite process: {exc!r}")
    return exc


# -- the process -----------------------------------------------------------------------------------
def serve(requests: BinaryIO, replies: BinaryIO, first_within_s: float | None = None) -> None:
    """Answer ``requests`` one at a time until they end; then close the database. With
    ``first_within_s``, end at once when no request comes within that time (a spare no one took)."""
    if first_within_s is not None and not select.select([requests], [], [], first_within_s)[0]:
        return
    db: sqlite3.Connection | None = None
    while True:
        try:
            name, args = receive(requests)
        except EOFError:
            break
        try:
            if name == "open":
                db = connect(*args)
                value: Any = migrate(db)
            elif db is None:
                raise RuntimeError("history's SQLite process has no database open")
            else:
                value = CALLS[name](db, *args)
            reply = (True, value)
        except Exception as exc:
            reply = (False, portable(exc))
        send(replies, reply)
    if db is not None:
        optimize_and_close(db)


def main() -> None:
    # The engine ends this process by closing its stdin (or by ending): see the module's docstring.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Replies get a descriptor of their own, and stdout becomes stderr: a stray print cannot break a frame.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with contextlib.suppress(ImportError):  # before the first request (a spare waits for it ready);
        importlib.import_module("sqlite3")  # without it, "open" answers why (import_driver)
    spare_for = [float(arg.removeprefix(SPARE_FLAG)) for arg in sys.argv[1:] if arg.startswith(SPARE_FLAG)]
    serve(sys.stdin.buffer, replies, spare_for[0] if spare_for else None)


# -- the database calls (here, each with the connection first) -------------------------------------
def connect(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """The connection to ``path`` (``TEMPORARY``, ``MEMORY`` or a file), with history's pragmas."""
    sqlite3 = import_driver("SQLite", "sqlite3", "a Python built with its sqlite3 module")
    _adapt_none_quickly(sqlite3)
    where = path or "a temporary file"
    try:  # isolation_level=None: we issue BEGIN/COMMIT ourselves
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise HistoryOpenFailed(where, str(exc)) from None
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if path == TEMPORARY:
            # Nothing in it outlives the process: no syncs. The rollback journal is a temporary file
            # too (kept between transactions): held in memory, it grew to a copy of every page a
            # batch changed, and the allocator kept that peak (~3 MB) for good.
            db.execute("PRAGMA synchronous = OFF")
            db.execute("PRAGMA journal_mode = PERSIST")
            db.execute(f"PRAGMA cache_size = {-_TEMPORARY_CACHE_KIB}")
        elif path != MEMORY:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        db.close()
        raise HistoryOpenFailed(where, str(exc)) from None
    return db


def migrate(db: sqlite3.Connection) -> list[tuple[int, str]]:
    """Apply the migrations not applied yet; returns them, ``(version, name)`` (the engine logs them)."""
    db.execute(migrations.SCHEMA_VERSION_TABLE)
    applied = {row[0] for row in db.execute("SELECT version FROM schema_version")}
    done: list[tuple[int, str]] = []
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
        done.append((migration.version, migration.name))
    return done


def database_id(db: sqlite3.Connection) -> str:
    with _transaction(db):
        db.execute("INSERT OR IGNORE INTO history_meta (name, value) VALUES ('database_id', ?)", (str(uuid.uuid4()),))
        row = db.execute("SELECT value FROM history_meta WHERE name = 'database_id'").fetchone()
    return str(row[0])


def write(db: sqlite3.Connection, records: list[EventRecord], feed: FeedStep | None) -> int:
    """One batch in one transaction, with the move of history's position in the feed; the lines added."""
    with _transaction(db):
        if feed is not None:
            _move_position(db, feed)
        rows = _job_rows(db, {r.job_id for r in records})
        lines = project(records, rows, feed.feed if feed is not None else None)
        _insert(db, _insert_events, lines)
        touched = {line[0] for line in lines}
        _insert(db, _upsert_jobs, [rows[job_id].as_tuple() for job_id in touched])
    return len(lines)


def write_feed(db: sqlite3.Connection, entries: Iterable[bytes], kinds: Collection[str], feed: FeedStep) -> FeedWritten:
    """A batch of feed entries read here, then written as :func:`write` does."""
    records, unreadable = read_entries(entries, kinds)
    write(db, records, feed)
    return FeedWritten(len(records), tuple(unreadable))


def mark_lost(db: sqlite3.Connection, at: float, keep_feed: str) -> int:
    with _transaction(db):
        p = sql.Params("qmark")
        lost = [LostJob(*values) for values in db.execute(sql.lost_candidates_query(keep_feed, p), p.values)]
        _insert(db, _insert_events, [job.line(at) for job in lost])
        db.executemany(sql.mark_lost_sql("?", "?", "?"), [(job.error, at, job.id) for job in lost])
    return len(lost)


def execute(db: sqlite3.Connection, statement: str, params: Sequence[Any]) -> None:
    with _transaction(db):
        db.execute(statement, params)


def purge_batch(db: sqlite3.Connection, cutoff_at: float, batch_size: int) -> int:
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


def fetch(db: sqlite3.Connection, query: str, params: Sequence[Any]) -> list[Any]:
    return db.execute(query, params).fetchall()


def optimize_and_close(db: sqlite3.Connection) -> None:
    try:
        db.execute("PRAGMA optimize")  # refresh the planner's statistics, as SQLite advises
    finally:
        db.close()


#: The calls the engine may make, by name (``open`` apart: it makes the connection).
CALLS: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (database_id, write, write_feed, mark_lost, execute, purge_batch, fetch)
}


# -- helpers ---------------------------------------------------------------------------------------
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


def _adapt_none_quickly(sqlite3: Any) -> None:
    """Register an adapter for None, unless one is registered.

    The ``sqlite3`` module binds an exact int, float or str as it is, and asks every other value
    (None among them) for an adapter: on CPython 3.11, with none registered for its type, that is two
    attribute lookups that fail with a formatted AttributeError. History's lines and job rows are
    full of NULLs (no worker, no error, no duration...), and those failures were 12 % of history's
    instructions. An adapter for None is found in one dict lookup, and binds NULL as before.
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
        with contextlib.suppress(Exception):  # no transaction left to roll back (SQLite ended it on the error)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


if __name__ == "__main__":
    main()
