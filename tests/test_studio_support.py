"""Shared pieces of the studio tests (blueprints, a studio client), and tests of the data layer.

The other ``test_studio_*`` modules import from here; pytest also collects the tests below.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

from aiohttp import web
from aiohttp.test_utils import TestClient
from engine_helpers import started_engine
from pydantic import BaseModel, Field

from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.studio import setup_studio
from avtomatika.studio.data import Cursor, EngineSource, HistorySource, JobQuery, StudioData, studio_data


class ClipInput(BaseModel):
    """The input model of the ``studio_clip`` blueprint: the studio builds its start form from it."""

    url: str = Field(description="Where the clip is")
    bitrate_kbps: int = 4000
    codec: Literal["h264", "av1"] = "h264"
    hdr: bool = False


def echo_blueprint(name: str = "studio_echo", input_model: type | None = None) -> StateMachineBlueprint:
    """start -> (echo task) -> done; ``initial_data`` becomes the task's params.

    ``fail_first: true`` makes the first dispatch from ``work`` ask for INVALID_INPUT (the job fails)
    and every later one succeed, so a retry from ``work`` finishes.
    """
    blueprint = StateMachineBlueprint(
        name, api_version="v1", api_endpoint=f"/jobs/{name}", description="Echoes its input.", input_model=input_model
    )

    @blueprint.handler_for("start", is_start=True)
    async def start(context: Any) -> None:
        context.actions.transition_to("work")

    @blueprint.handler_for("work")
    async def work(context: Any) -> None:
        tries = context.state_history.get("work_tries", 0) + 1
        context.state_history["work_tries"] = tries
        params = {k: v for k, v in context.initial_data.items() if k != "fail_first"}
        if context.initial_data.get("fail_first") and tries == 1:
            params["outcome"] = "invalid"
        context.actions.dispatch_task(task_type="echo", params=params, transitions={"success": "done"})

    @blueprint.handler_for("done", is_end=True)
    async def done(context: Any) -> None:
        context.state_history["done"] = True

    return blueprint


def studio_app(engine: OrchestratorEngine) -> web.Application:
    app = web.Application()
    setup_studio(app, engine)
    return app


@contextlib.asynccontextmanager
async def studio_engine(**settings: Any) -> AsyncIterator[OrchestratorEngine]:
    """A started in-memory engine with the echo and clip blueprints."""
    async with started_engine(echo_blueprint(), echo_blueprint("studio_clip", ClipInput), **settings) as engine:
        yield engine


CSRF = re.compile(r'"X-CSRF-Token": "([^"]+)"')  # every page's hx-headers


async def csrf_of(client: TestClient, path: str = "/studio/blueprints") -> str:
    """Open a page (which sets the session cookie) and read its CSRF token."""
    response = await client.get(path)
    assert response.status == 200, await response.text()
    found = CSRF.search(await response.text())
    assert found, "no CSRF token on the page"
    return found.group(1)


# -- the data layer ---------------------------------------------------------------------------------
def test_cursor_round_trip() -> None:
    cursor = Cursor(1764243661.123456, "abc-1")
    assert Cursor.decode(cursor.encode()) == cursor


async def test_keyset_pages_through_the_engine() -> None:
    async with studio_engine() as engine:
        created = [await engine.create_job("studio_echo", {"n": i}) for i in range(7)]
        data = StudioData(engine, EngineSource(engine))
        seen: list[str] = []
        cursor = None
        while True:
            page = await data.jobs_page(JobQuery(blueprint="studio_echo"), 3, cursor)
            seen += [row.id for row in page.rows]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor.encode()
        assert sorted(seen) == sorted(job.id for job in created)
        assert len(seen) == len(set(seen))
        prefix = created[0].id[:6]
        found = await data.jobs_page(JobQuery(id_prefix=prefix), 10)
        assert created[0].id in [row.id for row in found.rows]


class FakeHistory:
    """The part of the history contract :class:`HistorySource` uses, answering fixed data."""

    def __init__(self) -> None:
        self.asked: list[Any] = []

    async def list_jobs(self, where: Any, limit: int, cursor: Any) -> Any:
        from avtomatika.history.base import Cursor as HistoryCursor
        from avtomatika.history.base import JobPage
        from avtomatika.history.records import JobRow

        self.asked.append((where, limit, cursor))
        row = JobRow(id="j1", blueprint="b", status="finished", state="done", created_at=10.0, updated_at=11.0)
        return JobPage([row], HistoryCursor(10.0, "j1"))

    async def timeline(self, job_id: str, *, after_seq: int = 0) -> list[Any]:
        from avtomatika.history.base import TimelineEntry

        lines = [TimelineEntry(job_id, 1, 10.0, "job_created", "start", "pending", None, None, {})]
        return [line for line in lines if line.seq > after_seq]


async def test_history_source_maps_the_history_contract() -> None:
    history = FakeHistory()
    source = HistorySource(history)
    page = await source.list_jobs(JobQuery(status="finished", id_prefix="j"), 5, Cursor(20.0, "z"))
    assert [row.id for row in page.rows] == ["j1"]
    assert page.next_cursor == Cursor(10.0, "j1")
    where, limit, cursor = history.asked[0]
    assert (where.status, where.id_prefix, limit, cursor.id) == ("finished", "j", 5, "z")
    timeline = await source.timeline("j1")
    assert timeline is not None
    assert timeline[0].kind == "job_created"
    assert timeline[0].seq == 1
    assert await source.timeline("j1", after_seq=1) == []


async def test_studio_data_picks_history_when_the_engine_has_it() -> None:
    async with studio_engine() as engine:
        assert studio_data(engine).source.name == "history"
        history, engine.history = engine.history, None
        try:
            assert studio_data(engine).source.name == "engine"
        finally:
            engine.history = history
