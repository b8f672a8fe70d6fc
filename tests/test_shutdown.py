"""Stopping a serving engine: open worker long polls answer 204 at once instead of holding the stop."""

from __future__ import annotations

import asyncio

import aiohttp
from support.engine import GUARD_S, fast_config

from avtomatika import OrchestratorEngine
from avtomatika.storage import MemoryStorage

#: Far longer than the guard: a stop that waited for the polls would fail the test, not pass slowly.
POLL_TIMEOUT_S = 600.0


async def test_stop_answers_open_long_polls_with_204_at_once() -> None:
    engine = OrchestratorEngine(MemoryStorage(), fast_config(WORKER_POLL_TIMEOUT_SECONDS=POLL_TIMEOUT_S))
    await engine.start(host="127.0.0.1", port=0)
    base = f"http://127.0.0.1:{engine.port}/_worker/workers"
    async with aiohttp.ClientSession() as session:
        registration = {"worker_id": "w1", "supported_tasks": ["echo"]}
        async with session.post(f"{base}/register", json=registration) as response:
            assert response.status == 200

        async def poll() -> int:
            async with session.get(f"{base}/w1/tasks/next") as response:
                return response.status

        polls = [asyncio.create_task(poll()) for _ in range(3)]
        await asyncio.sleep(0.2)  # the polls are waiting: no task exists to answer them
        assert not any(p.done() for p in polls)
        async with asyncio.timeout(GUARD_S):
            await engine.stop()
            assert await asyncio.gather(*polls) == [204, 204, 204]
