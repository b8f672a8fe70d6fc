"""The history contract on SQLite: a file (WAL) and memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.history_contract import HistoryContract, Reopen

from avtomatika.history import HistoryStorage, SQLiteHistory, open_history, sqlite_process


class SQLiteContract(HistoryContract):
    """The contract, with SQLite's projection in history's own process: its database refuses a row."""

    async def refuse_job(self, history: HistoryStorage, job_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
        assert isinstance(history, SQLiteHistory)
        trigger = (
            "CREATE TEMP TRIGGER refuse_job BEFORE INSERT ON jobs WHEN NEW.id = ?"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        await history._run("execute", trigger.replace("?", f"'{job_id}'"), ())

    async def accept_jobs(self, history: HistoryStorage) -> None:
        assert isinstance(history, SQLiteHistory)
        await history._run("execute", "DROP TRIGGER temp.refuse_job", ())


class TestSQLiteMemory(SQLiteContract):
    @pytest.fixture
    async def history(self) -> AsyncIterator[HistoryStorage]:
        history = await open_history("sqlite::memory:")
        assert isinstance(history, SQLiteHistory)
        try:
            yield history
        finally:
            await history.close()


class TestSQLiteFile(SQLiteContract):
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return tmp_path / "history.db"

    @pytest.fixture
    async def history(self, path: Path) -> AsyncIterator[HistoryStorage]:
        history = await open_history(f"sqlite:///{path}")  # an absolute path: sqlite:////tmp/...
        try:
            yield history
        finally:
            await history.close()

    @pytest.fixture
    def reopen(self, path: Path) -> Reopen:
        async def again() -> HistoryStorage:
            return await open_history(f"sqlite:///{path}")

        return again


async def test_history_survives_closing_the_file(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'h.db'}"
    from support.history_contract import JobScript

    async with await open_history(uri) as history:
        await history.record(JobScript("j").created().step().enter("done").events)
    async with await open_history(uri) as history:
        assert [e.kind for e in await history.timeline("j")] == [
            "job_created",
            "step_finished",
            "state_left",
            "state_entered",
        ]


async def test_closed_history_says_so() -> None:
    history = SQLiteHistory()
    with pytest.raises(RuntimeError, match="not open"):
        await history.timeline("j")
    await history.close()  # closing what was never opened is fine


async def test_a_temporary_history_keeps_little_in_the_process() -> None:
    # Its journal is a file and its page cache small: the file's pages stay in the OS's cache.
    history = SQLiteHistory()
    await history.open()
    try:
        assert await history._fetch("PRAGMA journal_mode", ()) == [("persist",)]
        assert await history._fetch("PRAGMA cache_size", ()) == [(-512,)]
        assert await history._fetch("PRAGMA synchronous", ()) == [(0,)]
    finally:
        await history.close()


def test_none_is_bound_by_an_adapter_and_an_application_adapter_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """In history's process (its functions called here): None gets a quick adapter, unless one is set."""
    import sqlite3

    key = (type(None), sqlite3.PrepareProtocol)
    monkeypatch.delitem(sqlite3.adapters, key, raising=False)
    db = sqlite_process.connect(":memory:", 5000)
    try:
        assert sqlite3.adapters[key](None) is None  # registered, and NULL is what it binds
        assert sqlite_process.fetch(db, "SELECT ? IS NULL", (None,)) == [(1,)]
    finally:
        sqlite_process.optimize_and_close(db)

    def own(value: None) -> str:
        return "nothing"

    monkeypatch.setitem(sqlite3.adapters, key, own)
    sqlite_process.optimize_and_close(sqlite_process.connect(":memory:", 5000))
    assert sqlite3.adapters[key] is own
