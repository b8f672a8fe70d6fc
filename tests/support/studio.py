"""Shared pieces of the studio tests: the echo blueprints, a studio app and engine, its CSRF token,
signing in with a client token, and reading the next event of an SSE stream."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from pydantic import BaseModel, Field

from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.studio import setup_studio
from support.engine import started_engine


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


#: Two client tokens (``CLIENTS_CONFIG_PATH``): acme and globex.
CLIENTS_TOML = """
[acme]
token = "acme-secret"

[globex]
token = "globex-secret"
"""


async def sign_in(client, token: str, name: str = "someone") -> None:
    """Sign in to the studio with ``token`` as ``name`` (the session cookie stays on ``client``)."""
    csrf = await csrf_of(client, "/studio/login")
    response = await client.post("/studio/login", data={"csrf_token": csrf, "token": token, "name": name})
    assert response.status == 200, await response.text()


#: Longest wait for an SSE event.
GUARD_S = 10.0


async def next_event(response: ClientResponse, name: str, contains: str = "") -> str:
    """Read the stream until an event called ``name`` whose data contains ``contains``; return its data."""

    async def read() -> str:
        event, data = None, []
        while True:
            line = (await response.content.readline()).decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line:
                text = "\n".join(data)
                if event == name and contains in text:
                    return text
                event, data = None, []

    return await asyncio.wait_for(read(), GUARD_S)
