"""Demo workers: real clients of the engine's HTTP worker protocol, run in the demo's own loop."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

DEMO_WORKERS = {
    "demo-shipper": ["ship_express", "ship_standard"],
    "demo-imager": ["resize"],
    "demo-importer": ["import_file"],
}


#: Share of tasks a demo worker fails at random with a TRANSIENT_ERROR, to show retries.
HICCUP_RATE = 0.05


def answer(task_type: str, params: dict[str, Any]) -> dict[str, Any]:
    """What a demo worker answers: success, but a file named ``*.corrupt`` is refused for good (its
    job is quarantined), and a few tasks fail once at random (they are retried); each failure says why."""
    file = str(params.get("file", ""))
    if task_type == "import_file" and file.endswith(".corrupt"):
        message = f"{file}: the demo treats files named *.corrupt as corrupt; release with another file name"
        return {"status": "failure", "error": {"code": "PERMANENT_ERROR", "message": message}}
    if random.random() < HICCUP_RATE:
        message = f"the demo fails {HICCUP_RATE:.0%} of tasks at random, to show retries"
        return {"status": "failure", "error": {"code": "TRANSIENT_ERROR", "message": message}}
    return {"status": "success", "data": {"bytes": random.randint(10_000, 900_000), "by": task_type}}


async def run_worker(
    base_url: str,
    worker_id: str,
    task_types: list[str],
    *,
    token: str | None = None,
    concurrency: int = 3,
    heartbeat_s: float = 10.0,
) -> None:
    """Register, then take tasks and answer them (``concurrency`` at a time), until cancelled."""
    headers = {"X-Worker-Token": token} if token else {}
    record = {
        "worker_id": worker_id,
        "worker_type": "demo",
        "supported_tasks": task_types,
        "max_concurrent_tasks": concurrency,
    }
    async with aiohttp.ClientSession(base_url, headers=headers) as http:
        (await http.post("/_worker/workers/register", json=record)).raise_for_status()
        loops = [_heartbeat(http, record, heartbeat_s), *(_take_tasks(http, worker_id) for _ in range(concurrency))]
        await asyncio.gather(*loops)


async def _take_tasks(http: aiohttp.ClientSession, worker_id: str) -> None:
    while True:
        async with http.get(f"/_worker/workers/{worker_id}/tasks/next") as response:
            if response.status == 204:
                continue
            if response.status >= 400:
                await asyncio.sleep(1)  # e.g. expired while the engine was busy: the heartbeat re-registers
                continue
            task = await response.json()
        await asyncio.sleep(random.uniform(0.3, 2.5))  # pretend to work
        result = {
            "job_id": task["job_id"],
            "task_id": task["task_id"],
            "worker_id": worker_id,
            "result": answer(task["type"], task["params"]),
        }
        async with http.post("/_worker/tasks/result", json=result) as response:
            if response.status >= 400:
                logger.info("result for %s refused: %s", task["task_id"], await response.text())


async def _heartbeat(http: aiohttp.ClientSession, record: dict[str, Any], every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        async with http.patch(f"/_worker/workers/{record['worker_id']}", json={}) as response:
            if response.status == 404:
                await http.post("/_worker/workers/register", json=record)
