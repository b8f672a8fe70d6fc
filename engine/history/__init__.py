"""Every job's timeline, written from the engine's events into SQLite (default) or PostgreSQL.

``history = await open_history(config.HISTORY_DATABASE_URI)``, then
``writer = HistoryWriter(history, engine.events); await writer.start()``; read with
``history.timeline(job_id)``, ``history.list_jobs(...)``, ``history.counts(...)``. The database
drivers (sqlite3, asyncpg) are imported only when a backend is opened.
"""

from .base import (
    Cursor,
    HistoryCounts,
    HistoryDriverMissing,
    HistoryFilter,
    HistoryStorage,
    InvalidCursor,
    InvalidHistoryURI,
    Line,
    RecordPage,
    TaskOutcome,
)
from .factory import create_history, open_history, parse_history_uri
from .postgres import PostgresHistory
from .records import STATE_LEFT, EventRecord, JobRecord
from .retention import retention_loop
from .sqlite import SQLiteHistory
from .writer import DEFAULT_KINDS, HistoryWriter

__all__ = [
    "DEFAULT_KINDS",
    "STATE_LEFT",
    "Cursor",
    "EventRecord",
    "HistoryCounts",
    "HistoryDriverMissing",
    "HistoryFilter",
    "HistoryStorage",
    "HistoryWriter",
    "InvalidCursor",
    "InvalidHistoryURI",
    "JobRecord",
    "Line",
    "PostgresHistory",
    "RecordPage",
    "SQLiteHistory",
    "TaskOutcome",
    "create_history",
    "open_history",
    "parse_history_uri",
    "retention_loop",
]
