"""Every job's timeline, written from the engine's events into SQLite (default) or PostgreSQL.

``history = await open_history(config.HISTORY_DATABASE_URI)``, then
``writer = HistoryWriter(history, engine.events); await writer.start()``; read with
``history.timeline(job_id)``, ``history.list_jobs(...)``, ``history.counts(...)``. The database
drivers (sqlite3, asyncpg) are imported only when a backend is opened, and the names below when
first used (PEP 562): SQLite history's own process (:mod:`.sqlite_process`) imports this package
and must start quickly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
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
    from .sqlite import HistoryProcessDied, SQLiteHistory
    from .writer import DEFAULT_KINDS, HistoryWriter

#: Each public name and the module it lives in.
_WHERE = {
    **dict.fromkeys(
        [
            "Cursor",
            "HistoryCounts",
            "HistoryDriverMissing",
            "HistoryFilter",
            "HistoryStorage",
            "InvalidCursor",
            "InvalidHistoryURI",
            "Line",
            "RecordPage",
            "TaskOutcome",
        ],
        ".base",
    ),
    **dict.fromkeys(["create_history", "open_history", "parse_history_uri"], ".factory"),
    "PostgresHistory": ".postgres",
    **dict.fromkeys(["STATE_LEFT", "EventRecord", "JobRecord"], ".records"),
    "retention_loop": ".retention",
    **dict.fromkeys(["HistoryProcessDied", "SQLiteHistory"], ".sqlite"),
    **dict.fromkeys(["DEFAULT_KINDS", "HistoryWriter"], ".writer"),
}
__all__ = [
    "DEFAULT_KINDS",
    "STATE_LEFT",
    "Cursor",
    "EventRecord",
    "HistoryCounts",
    "HistoryDriverMissing",
    "HistoryFilter",
    "HistoryProcessDied",
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


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
