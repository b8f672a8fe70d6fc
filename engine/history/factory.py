"""Choose and open a history backend from ``HISTORY_DATABASE_URI``.

* nothing (None or ""): SQLite in a temporary file, the zero set-up default (history lasts as long
  as the process, and its pages beyond SQLite's cache stay on disk, not in the engine's memory);
* ``sqlite::memory:``, ``sqlite://`` or ``sqlite:///:memory:``: SQLite in memory (the same, but every
  page stays resident);
* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's convention: what
  follows the third slash is the path);
* ``postgresql://user:password@host:port/database`` (also ``postgres://``, ``postgresql+asyncpg://``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import HistoryStorage, InvalidHistoryURI
from .postgres import PostgresHistory, redact
from .sqlite import MEMORY, TEMPORARY, SQLiteHistory

_MEMORY_URIS = frozenset({"sqlite::memory:", "sqlite://", "sqlite:///:memory:", "sqlite:"})
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+asyncpg"})


def parse_history_uri(uri: str | None) -> tuple[str, str]:
    """``("sqlite", path)`` or ``("postgresql", dsn)``; raises :class:`InvalidHistoryURI`."""
    text = (uri or "").strip()
    if not text:
        return "sqlite", TEMPORARY
    if text in _MEMORY_URIS:
        return "sqlite", MEMORY
    if text.startswith("sqlite:///"):
        path = text.removeprefix("sqlite:///").split("?", 1)[0]
        if not path:
            raise InvalidHistoryURI(text, "no database path after 'sqlite:///'")
        return "sqlite", path
    scheme = urlsplit(text).scheme.lower()
    if scheme in _POSTGRES_SCHEMES:
        dsn = "postgresql" + text[len(scheme) :]
        if not urlsplit(dsn).hostname and "host=" not in dsn:
            raise InvalidHistoryURI(redact(text), "no host in the PostgreSQL URI")
        return "postgresql", dsn
    raise InvalidHistoryURI(
        redact(text),
        "expected sqlite:///path.db, sqlite::memory: or postgresql://user:password@host:port/database",
    )


def create_history(uri: str | None = None) -> HistoryStorage:
    """The backend ``uri`` names, not yet opened (``await history.open()``, or ``async with``)."""
    backend, target = parse_history_uri(uri)
    if backend == "postgresql":
        return PostgresHistory(target)
    return SQLiteHistory(target)


async def open_history(uri: str | None = None) -> HistoryStorage:
    """The backend ``uri`` names, connected and migrated; SQLite in a temporary file when ``uri`` is None.

    Raises when the database cannot be reached at start-up (a wrong URI should fail loudly); once
    running, the :class:`~avtomatika.history.writer.HistoryWriter` rides out outages.
    """
    history = create_history(uri)
    await history.open()
    return history
