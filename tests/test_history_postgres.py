"""The history contract on a real PostgreSQL server started by the tests, and the writer riding out
a server restart while an engine keeps running jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from support.blueprints import hop_blueprint
from support.history_contract import HistoryContract, JobScript, Reopen, feed_commit
from support.postgres_server import PostgresServer, require_postgres, running_postgres

from avtomatika import Config, OrchestratorEngine
from avtomatika.history import HistoryStorage, HistoryWriter, PostgresHistory, open_history
from avtomatika.history.migrations import POSTGRES, latest
from avtomatika.storage import MemoryStorage


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A server of the test's own, which it may stop and start."""
    require_postgres()
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres: PostgresServer) -> str:
    return postgres.create_database()


class TestPostgres(HistoryContract):
    @pytest.fixture
    async def history(self, postgres_dsn: str) -> AsyncIterator[HistoryStorage]:
        history = await open_history(postgres_dsn)
        assert isinstance(history, PostgresHistory)
        try:
            yield history
        finally:
            await history.close()

    @pytest.fixture
    def reopen(self, postgres_dsn: str) -> Reopen:
        async def again() -> HistoryStorage:
            return await open_history(postgres_dsn)

        return again


async def test_concurrent_openings_migrate_once(postgres_dsn: str) -> None:
    opened = await asyncio.gather(*(open_history(postgres_dsn) for _ in range(4)))
    try:
        assert {await h.schema_version() for h in opened} == {latest(POSTGRES)}
    finally:
        for history in opened:
            await history.close()


async def test_the_password_stays_out_of_repr(postgres: PostgresServer) -> None:
    history = PostgresHistory(f"postgresql://postgres:s3cret@127.0.0.1:{postgres.port}/postgres")
    assert "s3cret" not in repr(history)
    assert "***" in repr(history)


# -- the database goes away while jobs run ---------------------------------------------------------
async def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def finished(engine: OrchestratorEngine, job_ids: list[str]) -> None:
    deadline = time.monotonic() + 20
    for job_id in job_ids:
        while (job := await engine.get_job(job_id)) is None or job.status != "finished":
            assert time.monotonic() < deadline, f"job {job_id} did not finish: {job}"
            await asyncio.sleep(0.01)


EXPECTED = [
    "job_created",
    "step_finished",
    "state_left",
    "state_entered",
    "step_finished",
    "state_left",
    "job_finished",
]


async def test_jobs_go_on_while_postgres_is_down_and_history_catches_up(private_postgres: PostgresServer) -> None:
    server = private_postgres
    history = await open_history(server.create_database())
    engine = OrchestratorEngine(MemoryStorage(), Config(EXECUTOR_CONCURRENCY=2))
    engine.register_blueprint(hop_blueprint("hop", endpoint=True))
    await engine.start(http=False)
    writer = HistoryWriter(
        history, engine.storage, engine.events, flush_interval_s=0.02, retry_initial_s=0.05, retry_max_s=0.2
    )
    await writer.start()
    try:
        before = await engine.create_job("hop", {"n": 0})
        await finished(engine, [before.id])
        await wait_for(lambda: writer.written == 5, what="the first job's history")

        await asyncio.to_thread(server.stop)
        during = [(await engine.create_job("hop", {"n": n})).id for n in range(1, 6)]
        await finished(engine, during)  # the engine does not wait for history
        await wait_for(lambda: writer.failures >= 2, what="failed attempts")
        assert writer.written == 5
        assert (writer.dropped, writer.rejected) == (0, 0)
        assert writer.last_error is not None

        await asyncio.to_thread(server.start)  # same port, same data directory
        await wait_for(lambda: writer.written == 30, what="the feed to be written")
        assert (writer.written, writer.failures, writer.dropped, writer.rejected) == (30, 0, 0, 0)
        for job_id in [before.id, *during]:
            timeline = await history.timeline(job_id)
            assert [e.kind for e in timeline] == EXPECTED, job_id
            assert [e.seq for e in timeline] == list(range(1, 8))
            row = await history.get_job(job_id)
            assert row is not None
            assert (row.status, row.state, row.blueprint) == ("finished", "done", "hop")
    finally:
        await writer.stop()
        await engine.stop()
        await history.close()


async def test_stop_gives_up_after_its_timeout_when_the_database_is_down(
    private_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = private_postgres
    history = await open_history(server.create_database())
    storage = MemoryStorage()
    writer = HistoryWriter(history, storage, flush_interval_s=0.02, retry_initial_s=0.05, retry_max_s=0.1)
    await writer.start()
    try:
        await asyncio.to_thread(server.stop)
        await feed_commit(storage, JobScript("j").created().step().events)
        started = time.monotonic()
        await writer.stop(timeout_s=0.5)
        assert time.monotonic() - started < 5
        assert "stopped with 1 feed entries not written" in caplog.text
    finally:
        await history.close()
