"""Reads of history never wait on its writer for long: they answer, and say how far history lags.

The history here writes slowly while jobs keep being created, so the feed of history lines never
empties: a read that waited for an empty feed would never answer while the load lasts (and the load
here lasts until the read has answered).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

import pytest
from support.api import Api, MakeApi
from support.blueprints import API_BLUEPRINTS
from support.studio import csrf_of

from avtomatika import Config, OrchestratorEngine
from avtomatika.api.app import create_app
from avtomatika.history.base import FeedStep, FeedWritten
from avtomatika.history.sqlite import SQLiteHistory
from avtomatika.storage import MemoryStorage
from avtomatika.studio import setup_studio


class SlowHistory(SQLiteHistory):
    """SQLite history whose every write takes a while, as a loaded database's would."""

    async def write_feed(self, entries: Sequence[bytes], kinds: Collection[str], feed: FeedStep) -> FeedWritten:
        await asyncio.sleep(0.2)
        return await super().write_feed(entries, kinds, feed)


@contextlib.asynccontextmanager
async def sustained_creation(api: Api):
    """Jobs created back to back for as long as the block runs."""

    async def create() -> None:
        while True:
            await api.engine.create_job("approval", {})
            await asyncio.sleep(0.001)

    creator = asyncio.create_task(create())
    try:
        while api.engine.history_writer is None or api.engine.history_writer.written == 0:
            await asyncio.sleep(0.01)  # the first slow write has happened: the feed is behind
        yield
    finally:
        creator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await creator


@pytest.fixture
async def slow_api(aiohttp_client: Any) -> AsyncIterator[Api]:
    """The API and the studio of an engine whose history writes slowly."""
    config = Config(HISTORY_READ_WAIT_SECONDS=0.05, CLIENT_TOKEN=None, CLIENTS_CONFIG_PATH=None, LOG_FORMAT="text")
    engine = OrchestratorEngine(MemoryStorage(), config, history=SlowHistory())
    for blueprint in API_BLUEPRINTS:
        engine.register_blueprint(blueprint)
    await engine.start(http=False)
    app = create_app(engine)
    setup_studio(app, engine)
    try:
        yield Api(await aiohttp_client(app), engine)
    finally:
        await engine.stop()


async def test_reads_answer_under_load_and_say_history_lags(slow_api: Api) -> None:
    api = slow_api
    job_id = await api.create("/api/v1/jobs/approval")
    async with sustained_creation(api):
        status, listing = await api.client("GET", "/api/v1/jobs?limit=1")
        assert status == 200, listing
        assert listing["history_pending"] > 0
        status, history = await api.client("GET", f"/api/v1/jobs/{job_id}/history")
        assert status == 200, history
        assert history["history_pending"] > 0
        page: Any = await (await api.http.get("/studio/jobs?format=json")).json()
        assert page["history_pending"] > 0
        job_page = await (await api.http.get(f"/studio/jobs/{job_id}")).text()
        assert 'data-history="behind"' in job_page
        assert (await api.http.get("/studio/jobs")).status == 200
        await csrf_of(api.http)


async def test_when_history_keeps_up_reads_see_everything(make_api: MakeApi) -> None:
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/approval")
    _, listing = await api.client("GET", "/api/v1/jobs?limit=1")
    assert listing["history_pending"] == 0
    assert [job["id"] for job in listing["jobs"]] == [job_id]
    _, history = await api.client("GET", f"/api/v1/jobs/{job_id}/history")
    assert history["history_pending"] == 0
    assert history["history"][0]["kind"] == "job_created"
