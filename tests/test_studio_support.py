"""Shared pieces of the studio tests: blueprints, a studio client. The other ``test_studio_*`` modules
import from here (the read model the studio uses is tested in ``test_reads.py``)."""

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
