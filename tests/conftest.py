"""Fixtures shared by every test module: the real redis-server and PostgreSQL started by the tests,
the notebook debuggers, the API driver (``make_api``), the end-to-end engine and workers, and an HTTP
client session. Helpers live in ``support/`` (see its ``__init__``); its asserts are rewritten as a
test module's are, so a helper's failed assert shows its values."""

from collections.abc import AsyncIterator

import aiohttp
import pytest

pytest.register_assert_rewrite("support")

pytest_plugins = [
    "support.redis_server",
    "support.postgres_server",
    "support.notebook_fixtures",
    "support.api",
    "support.e2e",
]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session for talking to engine processes."""
    async with aiohttp.ClientSession() as client:
        yield client
