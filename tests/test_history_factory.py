"""Choosing a history backend from HISTORY_DATABASE_URI, and keeping its driver out of `import avtomatika`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from avtomatika.errors import ConfigError
from avtomatika.history import (
    InvalidHistoryURI,
    PostgresHistory,
    SQLiteHistory,
    create_history,
    open_history,
    parse_history_uri,
)
from avtomatika.history.migrations import SQLITE, latest


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (None, ("sqlite", "")),
        ("", ("sqlite", "")),
        ("sqlite::memory:", ("sqlite", ":memory:")),
        ("sqlite://", ("sqlite", ":memory:")),
        ("sqlite:///:memory:", ("sqlite", ":memory:")),
        ("sqlite:///history.db", ("sqlite", "history.db")),
        ("sqlite:////var/lib/avtomatika/history.db", ("sqlite", "/var/lib/avtomatika/history.db")),
        ("postgresql://u:p@db:5432/history", ("postgresql", "postgresql://u:p@db:5432/history")),
        ("postgres://u@db/history", ("postgresql", "postgresql://u@db/history")),
        ("postgresql+asyncpg://u@db/history", ("postgresql", "postgresql://u@db/history")),
    ],
)
def test_uris(uri: str | None, expected: tuple[str, str]) -> None:
    assert parse_history_uri(uri) == expected


@pytest.mark.parametrize("uri", ["mysql://u@db/x", "sqlite:///", "postgresql:///nohost", "history.db", "redis://x"])
def test_bad_uris_fail_loudly_without_the_password(uri: str) -> None:
    with pytest.raises(InvalidHistoryURI) as caught:
        parse_history_uri(uri)
    assert isinstance(caught.value, ConfigError)


def test_passwords_are_redacted_in_errors() -> None:
    with pytest.raises(InvalidHistoryURI) as caught:
        parse_history_uri("mysql://user:secret@db/x")
    assert "secret" not in str(caught.value)


def test_backends_by_uri(tmp_path: Path) -> None:
    assert isinstance(create_history(None), SQLiteHistory)
    assert create_history(f"sqlite:///{tmp_path}/h.db").path == f"{tmp_path}/h.db"  # type: ignore[attr-defined]
    assert isinstance(create_history("postgresql://u@localhost/h"), PostgresHistory)


async def test_open_history_defaults_to_a_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    history = await open_history()
    try:
        assert isinstance(history, SQLiteHistory)
        assert history.path == ""  # SQLite's private temporary database, deleted on close
        assert await history.schema_version() == latest(SQLITE)
        assert await history._fetch("PRAGMA synchronous", ()) == [(0,)]  # OFF: nothing in it outlives us
    finally:
        await history.close()
    assert list(tmp_path.iterdir()) == []


_PROBE = """
import asyncio, json, sys
import avtomatika.history
from avtomatika.history import open_history
loaded = lambda: sorted(m for m in ("sqlite3", "asyncpg") if m in sys.modules)
before = loaded()
async def main():
    history = await open_history(None)
    await history.close()
asyncio.run(main())
print(json.dumps([before, loaded()]))
"""


def test_drivers_are_imported_only_when_a_backend_is_opened(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    before, after = json.loads(proc.stdout.strip().splitlines()[-1])
    assert before == []  # importing the history package loads no driver
    assert after == []  # opening SQLite loads its driver in history's own process, not here


_NO_DRIVER = """
import asyncio, sys
sys.modules["asyncpg"] = None
from avtomatika.history import HistoryDriverMissing, open_history
for uri in (None, "postgresql://u@127.0.0.1:1/x"):
    try:
        asyncio.run(open_history(uri))
    except HistoryDriverMissing as exc:
        print(exc)
"""


def test_a_missing_driver_says_what_to_install(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked" / "sqlite3"  # history's process finds this sqlite3 first: it fails
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('no sqlite3 here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocked.parent)}
    proc = subprocess.run(
        [sys.executable, "-c", _NO_DRIVER],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    assert proc.stdout.splitlines() == [
        "history in SQLite needs the 'sqlite3' package: a Python built with its sqlite3 module",
        "history in PostgreSQL needs the 'asyncpg' package: pip install 'avtomatika[history]'",
    ]
