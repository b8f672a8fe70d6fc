"""The history contract on SQLite: a file (WAL) and memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.history_contract import HistoryContract, Reopen

from avtomatika.history import HistoryStorage, SQLiteHistory, open_history


class TestSQLiteMemory(HistoryContract):
    @pytest.fixture
    async def history(self) -> AsyncIterator[HistoryStorage]:
        history = await open_history("sqlite::memory:")
        assert isinstance(history, SQLiteHistory)
        try:
            yield history
        finally:
            await history.close()


class TestSQLiteFile(HistoryContract):
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


async def test_none_is_bound_by_an_adapter_and_an_application_adapter_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    key = (type(None), sqlite3.PrepareProtocol)
    monkeypatch.delitem(sqlite3.adapters, key, raising=False)
    history = await open_history("sqlite::memory:")
    try:
        assert sqlite3.adapters[key](None) is None  # registered, and NULL is what it binds
        assert await history._fetch("SELECT ? IS NULL", (None,)) == [(1,)]
    finally:
        await history.close()

    def own(value: None) -> str:
        return "nothing"

    monkeypatch.setitem(sqlite3.adapters, key, own)
    history = await open_history("sqlite::memory:")
    await history.close()
    assert sqlite3.adapters[key] is own
