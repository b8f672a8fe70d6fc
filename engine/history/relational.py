"""What SQLite's and PostgreSQL's history share: every read, written once over ``_fetch``.

A backend answers ``_fetch(query, params)`` with the rows (its own connection, thread or pool) and
names its placeholder style; the queries themselves are :mod:`.sql`'s.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from . import sql
from .base import (
    Cursor,
    HistoryCounts,
    HistoryFilter,
    HistoryStorage,
    Line,
    RecordPage,
    TaskOutcome,
    as_cursor,
    check_limit,
    counts_from,
    line_of,
    outcome_of,
    page_of,
)
from .records import JobRecord, load_json


class SqlHistory(HistoryStorage):
    """A history in an SQL database: the reads; its backend adds connections, migrations and writes."""

    placeholders: ClassVar[Literal["qmark", "numeric"]]

    @abstractmethod
    async def _fetch(self, query: str, params: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """The rows ``query`` answers with ``params`` bound."""

    def _params(self) -> sql.Params:
        return sql.Params(self.placeholders)

    async def ping(self) -> None:
        await self._fetch("SELECT 1", ())

    async def schema_version(self) -> int:
        rows = await self._fetch("SELECT COALESCE(MAX(version), 0) FROM schema_version", ())
        return int(rows[0][0])

    async def feed_position(self, feed: str) -> str | None:
        p = self._params()
        rows = await self._fetch(f"SELECT position FROM feed_positions WHERE feed = {p(feed)}", p.values)
        return str(rows[0][0]) if rows else None

    async def timeline(self, job_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[Line]:
        p = self._params()
        query = sql.timeline_query(job_id, after_seq, limit, p)
        return [line_of(values) for values in await self._fetch(query, p.values)]

    async def get_job(self, job_id: str) -> JobRecord | None:
        p = self._params()
        rows = await self._fetch(f"SELECT {sql.JOB_SELECT} FROM jobs WHERE id = {p(job_id)}", p.values)
        return JobRecord(*rows[0]) if rows else None

    async def list_jobs(
        self, where: HistoryFilter | None = None, limit: int = 50, cursor: Cursor | str | None = None
    ) -> RecordPage:
        check_limit(limit)
        p = self._params()
        query = sql.list_jobs_query(where or HistoryFilter(), as_cursor(cursor), limit + 1, p)
        return page_of([JobRecord(*values) for values in await self._fetch(query, p.values)], limit)

    async def counts(self, blueprint: str | None = None) -> HistoryCounts:
        p = self._params()
        query = sql.counts_query(blueprint, p)
        return counts_from((state, status, n) for state, status, n in await self._fetch(query, p.values))

    async def worker_outcomes(self, worker_id: str, limit: int = 100) -> list[TaskOutcome]:
        check_limit(limit)
        p = self._params()
        query = sql.worker_outcomes_query(worker_id, limit, p)
        return [outcome_of(job_id, at, load_json(data)) for job_id, at, data in await self._fetch(query, p.values)]

    async def graph(self, blueprint: str, version: str) -> dict[str, Any] | None:
        p = self._params()
        query = f"SELECT graph FROM blueprint_graphs WHERE blueprint = {p(blueprint)} AND version = {p(version)}"
        rows = await self._fetch(query, p.values)
        return load_json(rows[0][0]) if rows else None
