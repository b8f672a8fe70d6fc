"""History in SQLite: a file (WAL), a temporary file (the default) or memory. No server of its own,
but a process of its own.

Every database call (a batch written, a page read) goes to history's SQLite process, a child of the
engine (:mod:`.sqlite_process`): its CPU and memory are not the engine's, as PostgreSQL history's
are not. A call is one request and one reply over the child's pipes, made from one thread of the
history's own, which blocks (without the GIL) until the reply comes: a batch is one hand-off between
the event loop and the thread however many statements it takes, and works whichever event loop
awaits it. One thread also means one call at a time, so a read never sees a batch half written;
SQLite has one writer at a time anyway. The writer sends a batch as the feed entries' bytes
(:meth:`SQLiteHistory.write_feed`): the child reads, projects and writes them.

When the child dies (killed, out of memory), the call in flight and the next fail with
:class:`HistoryProcessDied`, logged; the call after starts a new child, which opens the database and
brings its schema up to date again. A file goes on where it was: the writer's batch in flight was
written or not, all of it (one transaction), and its retry is written once (or refused as
:class:`~avtomatika.history.base.FeedMoved`, when it was). A temporary or in-memory database is gone
with the child: the new one starts empty but for the blueprint graphs saved into the lost one (saved
again), with a new id and no position in the feed, so the writer's
next batch is refused (FeedMoved), it reads where the new database stands (nowhere) and goes on with
what the feed still holds (the error says so). The writer keeps naming the database to the feed by
the id it read first: this engine's history is still one reader of the feed, and nothing is written
twice into either database. What the engine keeps beside jobs (blueprint graphs) is not written again.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import AvtomatikaError
from ..feed import dump_json
from . import migrations, sql
from .base import FeedStep, FeedWritten, HistoryOpenFailed
from .records import EventRecord
from .relational import SqlHistory
from .sqlite_process import MEMORY, MODULE, SPARE_FLAG, TEMPORARY, receive, send

logger = logging.getLogger(__name__)

__all__ = ["MEMORY", "TEMPORARY", "HistoryProcessDied", "SQLiteHistory"]

_SAVE_GRAPH = sql.save_graph_sql("?", "?", "?", "?")
#: Longest a closing history waits for its process to optimise and close the database.
CLOSE_TIMEOUT_S = 30.0


class HistoryProcessDied(AvtomatikaError):
    """History's SQLite process ended while the engine needed it (killed, out of memory...)."""

    def __init__(self, pid: int, returncode: int | None, path: str) -> None:
        self.pid = pid
        self.returncode = returncode
        self.path = path
        if returncode is None:
            how = "it stopped answering"
        elif returncode < 0:
            how = f"killed by {_signal_name(-returncode)}"
        else:
            how = f"exit code {returncode}"
        if path in (TEMPORARY, MEMORY):
            kind = "temporary" if path == TEMPORARY else "in-memory"
            after = f"the history it held (a {kind} database) is gone; the next call starts a new, empty one"
        else:
            after = f"the next call starts a new one on {path}"
        super().__init__(f"history's SQLite process (pid {pid}) ended ({how}): {after}")


class SQLiteHistory(SqlHistory):
    """History in an SQLite database, kept by a process of its own.

    Args:
        path: A file path; ``""`` (the default) for a temporary file that lives as long as history's
            process (history for one run, zero set-up); or ``":memory:"`` for one held in memory.
        busy_timeout_ms: How long to wait for another process holding the file's write lock.
    """

    backend = "sqlite"
    placeholders = "qmark"

    def __init__(self, path: str = TEMPORARY, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        #: Processes started after one died (0 while the first one lives).
        self.restarts = 0
        self._thread: ThreadPoolExecutor | None = None
        self._process: subprocess.Popen[bytes] | None = None  # used on self._thread only
        self._ending: weakref.finalize | None = None  # ends the process if this object is forgotten
        #: The graphs saved, by blueprint and version, while the database dies with its process: saved
        #: again in the next one (job pages draw the graph their job ran on).
        self._graphs: dict[tuple[str, str], tuple[Any, ...]] = {}

    def __repr__(self) -> str:
        return f"SQLiteHistory({self.path!r})"

    @property
    def process_id(self) -> int | None:
        """The pid of history's SQLite process (None while there is none)."""
        process = self._process
        return process.pid if process is not None else None

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._thread is not None:
            return
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avtomatika-history")
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._start)
        except BaseException:
            await self.close()
            raise
        where = self.path or "temporary file"
        logger.info(
            "history: SQLite %s in process %s, schema version %d",
            where,
            self.process_id,
            migrations.latest(migrations.SQLITE),
        )

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(thread, self._stop)
        finally:
            thread.shutdown(wait=False)

    async def database_id(self) -> str:
        result: str = await self._run("database_id")
        return result

    # -- writing ---------------------------------------------------------------------------------
    async def write(self, records: Sequence[EventRecord], feed: FeedStep | None = None) -> int:
        if not records and feed is None:
            return 0
        result: int = await self._run("write", list(records), feed)
        return result

    async def write_feed(self, entries: Sequence[bytes], kinds: Collection[str], feed: FeedStep) -> FeedWritten:
        # The bytes as they are: read, projected and written in history's process.
        result: FeedWritten = await self._run("write_feed", list(entries), kinds, feed)
        return result

    # -- what outlives jobs ------------------------------------------------------------------------
    async def save_graph(self, blueprint: str, version: str, graph: dict[str, Any]) -> None:
        params = (blueprint, version, dump_json(graph), time.time())
        if self.path in (TEMPORARY, MEMORY):
            self._graphs[blueprint, version] = params
        await self._run("execute", _SAVE_GRAPH, params)

    async def mark_lost(self, at: float, keep_feed: str) -> int:
        lost: int = await self._run("mark_lost", at, keep_feed)
        if lost:
            logger.warning("history: %d jobs were lost with the engine that held them in memory", lost)
        return lost

    # -- retention -------------------------------------------------------------------------------
    async def purge_before(self, cutoff_at: float, batch_size: int = 1000) -> int:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        deleted = 0
        while True:
            count: int = await self._run("purge_batch", cutoff_at, batch_size)
            deleted += count
            if count < batch_size:
                return deleted
            await asyncio.sleep(0)  # let the writer in between batches

    # -- reading ---------------------------------------------------------------------------------
    async def _fetch(self, query: str, params: Sequence[Any]) -> list[Any]:
        rows: list[Any] = await self._run("fetch", query, list(params))
        return rows

    # -- the process -------------------------------------------------------------------------------
    async def _run(self, name: str, *args: Any) -> Any:
        """The call ``name(*args)`` made in history's process, from history's thread."""
        if self._thread is None:
            raise RuntimeError("history is not open; call `await history.open()` first")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, name, args)

    def _call(self, name: str, args: tuple[Any, ...]) -> Any:
        """(On history's thread.) The reply to ``name(*args)``; a new process first if the last one died."""
        process = self._process
        if process is None:
            self.restarts += 1
            logger.warning("history: starting a new SQLite process for %s", self.path or "a temporary database")
            process = self._start()
            for params in self._graphs.values():  # a new temporary database: the graphs the lost one had
                _ask(process, self.path, "execute", (_SAVE_GRAPH, params))
        try:
            return _ask(process, self.path, name, args)
        except HistoryProcessDied as died:
            self._forget(process)
            logger.error("history: %s", died)
            raise

    def _start(self) -> subprocess.Popen[bytes]:
        """(On history's thread.) A new process, with the database open and its schema up to date."""
        process, spare = _SPARES.take()
        try:
            return self._open_in(process, spare)
        except _SpareGone:  # it gave up waiting as it was taken: a new process
            return self._open_in(_spawn(), spare=False)

    def _open_in(self, process: subprocess.Popen[bytes], spare: bool) -> subprocess.Popen[bytes]:
        ending = weakref.finalize(self, _end, process)
        try:
            applied = _ask(process, self.path, "open", (_absolute(self.path), self.busy_timeout_ms))
        except HistoryProcessDied as died:  # it could not even start: its own error is on our stderr
            ending()
            if spare and died.returncode == 0:
                raise _SpareGone from None
            how = f"its process (pid {died.pid}) ended at start-up, exit code {died.returncode}; see stderr"
            raise HistoryOpenFailed(self.path or "a temporary file", how) from None
        except BaseException:
            ending()
            raise
        for version, name in applied:
            logger.info("history: applied SQLite migration %d (%s)", version, name)
        self._process, self._ending = process, ending
        return process

    def _stop(self) -> None:
        """(On history's thread.) End the process: it optimises and closes the database, and exits."""
        process, ending = self._process, self._ending
        self._process = self._ending = None
        if ending is not None:
            ending()
        elif process is not None:
            _end(process)

    def _forget(self, process: subprocess.Popen[bytes]) -> None:
        """(On history's thread.) ``process`` died: the next call starts another."""
        ending, self._process, self._ending = self._ending, None, None
        if ending is not None:
            ending()
        else:
            _end(process)


def _spawn(*flags: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", MODULE, *flags]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)


def _absolute(path: str) -> str:
    """A file's path as this process resolves it (history's process may have started elsewhere)."""
    return path if path in (TEMPORARY, MEMORY) else os.path.abspath(path)


class _Spares:
    """A process started ahead of the next ``open``, while this one opens histories often.

    A process ready to take its first call has spent ~0.1 s of CPU and wall time starting Python and
    importing what it needs; an engine opens its history as it starts. A program that opens one
    history after another (a test suite, a notebook starting engines again, a process that died) gets
    one started beforehand, which is ready by the time it is needed. One open alone starts none; a
    spare no one takes ends after ``SPARE_IDLE_S``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: subprocess.Popen[bytes] | None = None
        self._opened_at = -math.inf

    def take(self) -> tuple[subprocess.Popen[bytes], bool]:
        """A process for an ``open``, and whether it is the spare (if it still waits), else a new one."""
        now = time.monotonic()
        with self._lock:
            spare, self._ready = self._ready, None
            if now - self._opened_at < SPARE_AFTER_S:
                self._ready = _spawn(f"{SPARE_FLAG}{SPARE_IDLE_S}")
            self._opened_at = now
        if spare is not None and spare.poll() is None:
            return spare, True
        return _spawn(), False

    def end(self) -> None:
        """End the spare (this process is ending): it ends with its stdin."""
        with self._lock:
            spare, self._ready = self._ready, None
        if spare is not None:
            _end(spare)


class _SpareGone(Exception):
    """The spare ended (no one had taken it for ``SPARE_IDLE_S``) just as it was taken."""


#: Opens this close together start a spare process for the next one (see ``_Spares``)...
SPARE_AFTER_S = 10.0
#: ...which ends when no open took it within this time.
SPARE_IDLE_S = 30.0
_SPARES = _Spares()
atexit.register(_SPARES.end)


def _ask(process: subprocess.Popen[bytes], path: str, name: str, args: tuple[Any, ...]) -> Any:
    """Send the call, wait for its reply: the value, or the exception raised (HistoryProcessDied)."""
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        send(process.stdin, (name, args))
        ok, value = receive(process.stdout)
    except (OSError, EOFError, ValueError):  # a broken pipe, the end of the replies, a pipe closed here
        returncode = _wait(process, 5.0)
        raise HistoryProcessDied(process.pid, returncode, path) from None
    if ok:
        return value
    raise value


def _end(process: subprocess.Popen[bytes]) -> None:
    """Close the process's stdin (it ends there) and wait for it; kill it if it takes too long."""
    assert process.stdin is not None
    assert process.stdout is not None
    with contextlib.suppress(OSError):  # its end of the pipe is gone already: it has ended
        process.stdin.close()
    _wait(process, CLOSE_TIMEOUT_S)
    process.stdout.close()


def _wait(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """The process's exit code once it has ended; killed after ``timeout_s``."""
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
