"""Shared pieces of the studio tests: the echo blueprints, a studio app and engine, its CSRF token,
signing in with a client token, and reading the next event of an SSE stream."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from avtomatika import OrchestratorEngine
from avtomatika.studio import setup_studio
from support.blueprints import ClipInput, echo_blueprint
from support.engine import started_engine


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
