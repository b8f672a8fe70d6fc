"""Fixtures shared by every test module: the real redis-server and PostgreSQL started by the tests,
the notebook debuggers, and an HTTP client session."""

from collections.abc import AsyncIterator

import aiohttp
import pytest

pytest_plugins = ["redis_server", "postgres_server", "notebook_fixtures"]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session for talking to engine processes."""
    async with aiohttp.ClientSession() as client:
        yield client
