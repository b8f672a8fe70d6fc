"""End to end over real HTTP: the engine as its own process, real worker processes, a real client.

Every test runs twice: with our protocol-exact echo worker and with a worker built on the real SDK
(``avtomatika-worker==1.0b1``). The engine (``support/apps/e2e.py``) is shared by the module; each test's
workers serve a task type of their own. What the workers answer is chosen by the job's params (see
``support/workers/echo.py``).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from support.e2e import E2E, TERMINAL

# The test functions only: building the SDK's venv (once, cached) may take longer on a cold CI cache;
# the fixtures bound their own waits (engine start 30 s, pip steps 600 s).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(60, func_only=True)]

FANOUT_TASKS = 50
SDK_RESULT_POST = re.compile(r"http POST /_worker/tasks/result -> (\d+)")
#: What each worker logs once its WebSocket is open, and when a server ``cancel_task`` reached it.
WS_CONNECTED = {"echo": "websocket connected", "sdk": "WebSocket connection established"}
CANCEL_RECEIVED = {"echo": "cancel_task received", "sdk": "by orchestrator command"}


async def assert_results_answered_200(e2e: E2E, timeout_s: float = 10.0) -> None:
    """The SDK re-sends a result unless it is answered exactly 200: every answer it got must be 200.

    The job may end before the worker has logged the answer to its result (the engine acts on the
    result, then answers): its log is read again until an answer shows (at most ``timeout_s``).
    """
    sdk_workers = [worker for worker in e2e.workers if worker.kind == "sdk"]
    if not sdk_workers:
        return
    deadline = time.monotonic() + timeout_s
    while True:
        answers = {
            worker.worker_id: SDK_RESULT_POST.findall(worker.log_path.read_text(errors="replace"))
            for worker in sdk_workers
        }
        if any(answers.values()) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    assert any(answers.values()), f"no SDK worker posted a result\n{e2e.diagnostics()}"
    assert {a for found in answers.values() for a in found} == {"200"}, f"{answers}\n{e2e.diagnostics()}"


async def test_success_finishes(e2e: E2E) -> None:
    [worker] = await e2e.start_workers(1)
    job_id = await e2e.create_job("e2e_single", {"outcome": "success", "marker": "one"})
    job = await e2e.wait_status(job_id, "finished")
    history = job["state_history"]
    assert history["echo"]["marker"] == "one", e2e.diagnostics(job)
    assert history["worker_id"] == worker.worker_id
    assert history["done"] is True
    assert job["current_state"] == "done"
    assert job["retry_count"] == 0
    await assert_results_answered_200(e2e)


async def test_transient_twice_then_success(e2e: E2E) -> None:
    await e2e.start_workers(1)  # one worker: it counts the attempts of each job
    job_id = await e2e.create_job("e2e_single", {"fail_times": 2, "outcome": "success"})
    job = await e2e.wait_status(job_id, "finished")
    assert job["retry_count"] == 2, e2e.diagnostics(job)
    assert job["state_history"]["echo"]["fail_times"] == 2
    await assert_results_answered_200(e2e)


async def test_permanent_quarantines_then_release_with_params_finishes(e2e: E2E) -> None:
    await e2e.start_workers(1)
    job_id = await e2e.create_job("e2e_single", {"outcome": "permanent", "marker": "held"})
    job = await e2e.wait_status(job_id, "quarantined")
    assert "PERMANENT_ERROR" in (job["error_message"] or ""), e2e.diagnostics(job)
    quarantine = (await e2e.get("/api/v1/quarantine"))["jobs"]
    assert job_id in {j["id"] for j in quarantine}, f"{quarantine}\n{e2e.diagnostics(job)}"

    await e2e.post(f"/api/v1/jobs/{job_id}/release", {"params": {"outcome": "success"}})
    job = await e2e.wait_status(job_id, "finished")
    echoed = job["state_history"]["echo"]
    assert echoed["outcome"] == "success", e2e.diagnostics(job)
    assert echoed["marker"] == "held"  # the edited params were merged into the task's own
    await assert_results_answered_200(e2e)


async def test_invalid_input_fails(e2e: E2E) -> None:
    await e2e.start_workers(1)
    job_id = await e2e.create_job("e2e_single", {"outcome": "invalid"})
    job = await e2e.wait_status(job_id, "failed")
    assert "INVALID_INPUT_ERROR" in (job["error_message"] or ""), e2e.diagnostics(job)
    assert job["retry_count"] == 0
    await assert_results_answered_200(e2e)


async def test_unknown_status_fails(e2e: E2E) -> None:
    await e2e.start_workers(1)
    job_id = await e2e.create_job("e2e_single", {"outcome": "status:mystery"})
    job = await e2e.wait_status(job_id, "failed")
    assert job["error_message"] == "Worker returned unhandled status: mystery", e2e.diagnostics(job)
    await assert_results_answered_200(e2e)


async def test_fan_out_over_two_workers_aggregates_once(e2e: E2E) -> None:
    workers = await e2e.start_workers(2)
    ids = sorted(w.worker_id for w in workers)
    # Each task sleeps a little so both workers stay at their concurrency limit (4) for a while: the
    # SDK then heartbeats ``status: busy, supported_tasks: []``, which must not erase its task type.
    job_id = await e2e.create_job("e2e_fanout", {"sleep_s": 0.25}, count=FANOUT_TASKS)
    statuses_seen: set[str] = set()
    lost_task_type: list[dict[str, Any]] = []
    deadline = time.monotonic() + 40
    while (job := await e2e.job(job_id))["status"] not in TERMINAL and time.monotonic() < deadline:
        for record in (await e2e.get("/api/v1/workers"))["workers"]:
            if record["worker_id"] in ids:
                statuses_seen.add(str(record.get("status")))
                if e2e.task_type not in (record.get("supported_tasks") or []):
                    lost_task_type.append(record)
        await asyncio.sleep(0.05)
    job = await e2e.wait_status(job_id, "finished", timeout_s=5)
    history = job["state_history"]
    assert history["aggregator_runs"] == 1, e2e.diagnostics(job)
    assert history["result_count"] == FANOUT_TASKS, e2e.diagnostics(job)
    assert history["indices"] == list(range(FANOUT_TASKS)), e2e.diagnostics(job)
    assert history["result_statuses"] == ["success"]
    assert history["distinct_workers"] == 2, e2e.diagnostics(job)
    assert history["worker_ids"] == ids
    assert not lost_task_type, f"worker records without their task type: {lost_task_type[:3]}\n{e2e.diagnostics()}"
    if e2e.kind == "sdk":
        assert "busy" in statuses_seen, f"the SDK never reported busy ({statuses_seen}): the quirk was not exercised"
    await assert_results_answered_200(e2e)


async def test_worker_killed_mid_task_is_replaced_after_timeout(e2e: E2E, tmp_path: Path) -> None:
    workers = await e2e.start_workers(2)
    marker = tmp_path / "crashed-once"
    job_id = await e2e.create_job("e2e_crash", {"crash_once_file": str(marker), "outcome": "success"})
    job = await e2e.wait_status(job_id, "finished", timeout_s=30)
    crashed_id = marker.read_text()
    [crashed] = [w for w in workers if w.worker_id == crashed_id]
    [survivor] = [w for w in workers if w is not crashed]
    assert crashed.proc.poll() == 3, e2e.diagnostics(job)  # the worker's crash exit code
    assert survivor.proc.poll() is None, e2e.diagnostics(job)
    assert job["state_history"]["worker_id"] == survivor.worker_id, e2e.diagnostics(job)
    assert job["retry_count"] == 1, e2e.diagnostics(job)
    await assert_results_answered_200(e2e)


async def test_progress_and_cancel_travel_over_the_websocket(e2e: E2E) -> None:
    """The SDK opens ``/_worker/ws`` with no worker id under the global token: it must still be heard."""
    [worker] = await e2e.start_workers(1)
    await e2e.wait_worker_log(worker, WS_CONNECTED[e2e.kind])
    job_id = await e2e.create_job("e2e_single", {"sleep_s": 30})
    await e2e.wait_until(job_id, lambda j: (j.get("task") or {}).get("progress") == 0.5, "progress 0.5")
    await e2e.post(f"/api/v1/jobs/{job_id}/cancel")
    await e2e.wait_status(job_id, "cancelled")
    await e2e.wait_worker_log(worker, CANCEL_RECEIVED[e2e.kind])


#: The first answer a worker logs for a result it posted (echo worker / SDK trace).
RESULT_ANSWER = {
    "echo": re.compile(r"result (?:posted|rejected) .*?status=cancelled .*?http=(\d+)"),
    "sdk": SDK_RESULT_POST,
}


async def test_result_of_a_task_cancelled_by_the_engine_is_acknowledged_200(e2e: E2E) -> None:
    [worker] = await e2e.start_workers(1)
    await e2e.wait_worker_log(worker, WS_CONNECTED[e2e.kind])
    job_id = await e2e.create_job("e2e_single", {"sleep_s": 30})
    await e2e.wait_until(job_id, lambda j: (j.get("task") or {}).get("status") == "assigned", "task taken")
    await e2e.wait_worker_log(worker, "task received")
    await e2e.post(f"/api/v1/jobs/{job_id}/cancel")
    await e2e.wait_status(job_id, "cancelled")
    answer = RESULT_ANSWER[e2e.kind]
    deadline = time.monotonic() + 10
    while not (found := answer.findall(worker.log_path.read_text(errors="replace"))):
        assert time.monotonic() < deadline, f"the worker posted no cancelled result\n{e2e.diagnostics()}"
        await asyncio.sleep(0.05)
    assert found[0] == "200", f"the cancelled result was answered {found[0]}\n{e2e.diagnostics()}"
