"""Bulk actions: one operation on many jobs at a capped rate, its progress, cancelling it, and who may.

Through the engine (``engine.bulk``) and the HTTP API (``/api/v1/bulk``). The crash cases of its
writes are in test_crash_points.py.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from support.api import Api, MakeApi

from avtomatika.errors import BulkRefused
from avtomatika.events import EventKind
from avtomatika.models import BulkAction, BulkStatus


async def _quarantined(api: Api, count: int, *, token: str | None = None) -> list[str]:
    """``count`` work jobs quarantined by their worker's PERMANENT_ERROR, in creation order."""
    await api.register("w1")
    job_ids = []
    for n in range(count):
        job_id = await api.create("/api/v1/jobs/work", {"n": n}, token=token)
        task = await api.next_task("w1")
        status, body = await api.result(task, "w1", "failure", error={"code": "PERMANENT_ERROR", "message": "bad"})
        assert status == 200, body
        job_ids.append(job_id)
    for job_id in job_ids:
        await api.wait_job(job_id, "quarantined", token=token)
    return job_ids


async def _ended(api: Api, bulk_id: str, timeout_s: float = 20) -> dict[str, Any]:
    for _ in range(int(timeout_s / 0.02)):
        status, view = await api.client("GET", f"/api/v1/bulk/{bulk_id}")
        assert status == 200, view
        if view["status"] != "running":
            return dict(view)
        await asyncio.sleep(0.02)
    raise AssertionError(f"bulk action {bulk_id} still running: {view}")


async def test_a_bulk_release_edits_params_at_the_rate_asked(make_api: MakeApi) -> None:
    api = await make_api()
    job_ids = await _quarantined(api, 8)
    body = {"action": "release", "job_ids": job_ids, "rate_per_s": 10, "params": {"n": 99}}
    status, started = await api.client("POST", "/api/v1/bulk", json=body)
    assert status == 202, started
    assert (started["status"], started["total"], started["options"]) == ("running", 8, {"params": {"n": 99}})
    view = await _ended(api, started["id"])
    assert (view["status"], view["handled"], view["done"], view["skipped"]) == ("finished", 8, 8, 0)
    released = []
    for job_id in job_ids:
        job = await api.job(job_id)
        assert (job["status"], job["task"]["params"]) == ("waiting_for_worker", {"n": 99})
        (event,) = [e for e in await api.engine.job_history(job_id) if e.kind == EventKind.JOB_RELEASED]
        assert event.data["bulk_id"] == started["id"]
        assert event.data["actor"] == "client:anonymous"
        assert event.data["changes"] == {"set": {"n": 99}}
        released.append(event.at)
    # 10 a second: one job every 0.1 s, in the order given.
    gaps = [later - earlier for earlier, later in itertools.pairwise(released)]
    assert min(gaps) >= 0.09, gaps


async def test_a_bulk_action_can_be_cancelled_between_two_jobs(make_api: MakeApi) -> None:
    api = await make_api()
    job_ids = await _quarantined(api, 5)
    action = await api.engine.bulk.start("fail", job_ids, rate_per_s=2, actor="operator:ann", reason="bad batch")
    await api.wait_job(job_ids[0], "failed")
    status, view = await api.client("POST", f"/api/v1/bulk/{action.id}/cancel")
    assert (status, view["status"], view["cancelled_by"]) == (200, "cancelled", "client:anonymous"), view
    await asyncio.sleep(1.2)  # when its next job would have come
    stored = await api.engine.bulk.get(action.id)
    assert stored.status == BulkStatus.CANCELLED
    assert stored.done == stored.handled < 5
    statuses = [(await api.job(job_id))["status"] for job_id in job_ids]
    assert statuses[: stored.done] == ["failed"] * stored.done
    assert statuses[stored.done :] == ["quarantined"] * (5 - stored.done)
    assert (await api.job(job_ids[0]))["error_message"] == "bad batch · root cause: PERMANENT_ERROR: bad"
    assert await api.engine.storage.next_timer_at() is None  # nothing left to move it on


async def test_jobs_the_operation_no_longer_applies_to_are_skipped_with_the_reason(
    make_api: MakeApi,
) -> None:
    api = await make_api()
    job_ids = await _quarantined(api, 3)
    await api.engine.release_job(job_ids[1])
    action = await api.engine.bulk.start(
        "release", [*job_ids, job_ids[0], "no-such-job"], rate_per_s=100, actor="operator:ann"
    )
    assert action.total == 4  # a job named twice is handled once
    view = await _ended(api, action.id)
    assert (view["done"], view["skipped"]) == (2, 2)
    assert view["problems"] == [
        {"job_id": job_ids[1], "reason": "only quarantined jobs can be released, not waiting_for_worker"},
        {"job_id": "no-such-job", "reason": "Job 'no-such-job' not found"},
    ]


async def test_every_operation_goes_in_bulk(make_api: MakeApi) -> None:
    api = await make_api()
    await api.engine.set_breakpoint("approval", "start")
    waiting = [await api.create("/api/v1/jobs/approval") for _ in range(2)]
    for job_id in waiting:
        await api.wait_job(job_id, "held")
    continued = await api.engine.bulk.start("continue", waiting, rate_per_s=100, actor="operator:ann")
    assert (await _ended(api, continued.id))["done"] == 2
    for job_id in waiting:
        await api.wait_job(job_id, "waiting_for_human")
    cancelled = await api.engine.bulk.start("cancel", waiting, rate_per_s=100, actor="operator:ann")
    assert (await _ended(api, cancelled.id))["done"] == 2
    retried = await api.engine.bulk.start("retry", waiting, rate_per_s=100, actor="operator:ann", from_state="start")
    assert (await _ended(api, retried.id))["done"] == 2
    for job_id in waiting:
        await api.wait_job(job_id, "held")  # start again: a new visit, held again
    _, listed = await api.client("GET", "/api/v1/bulk")
    assert [b["action"] for b in listed["bulk_actions"]] == ["retry", "cancel", "continue"]


async def test_refused_bulk_actions_name_what_is_wrong(make_api: MakeApi) -> None:
    api = await make_api()
    cases = [
        ({"action": "explode", "job_ids": ["a"]}, "action"),
        ({"action": "release", "job_ids": []}, "job_ids"),
        ({"action": "release", "job_ids": ["a"], "rate_per_s": 0}, "rate_per_s"),
        ({"action": "release", "job_ids": ["a"], "rate_per_s": 5000}, "rate_per_s"),
        ({"action": "release", "job_ids": ["a"] * 10_001}, "job_ids"),
        ({"action": "release", "job_ids": ["a"], "reason": "x"}, "reason"),
        ({"action": "fail", "job_ids": ["a"], "params": {"n": 1}}, "params"),
    ]
    for body, field in cases:
        status, answer = await api.client("POST", "/api/v1/bulk", json=body)
        assert (status, answer.get("field")) == (400, field), (body, answer)
    assert await api.engine.storage.list_bulks() == []
    with pytest.raises(BulkRefused, match="rate_per_s"):
        await api.engine.bulk.start("release", ["a"], rate_per_s=float("nan"), actor="x")
    status, answer = await api.client("GET", "/api/v1/bulk/nope")
    assert status == 404, answer


async def test_a_client_with_a_token_bulks_its_own_jobs_only(make_api: MakeApi, tmp_path: Path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text('[alice]\ntoken = "alice-token"\n\n[bob]\ntoken = "bob-token"\n')
    api = await make_api(CLIENTS_CONFIG_PATH=clients)
    alice_jobs = await _quarantined(api, 2, token="alice-token")
    body = {"action": "release", "job_ids": alice_jobs}
    status, answer = await api.client("POST", "/api/v1/bulk", json=body, token="bob-token")
    assert status == 404, answer
    assert await api.engine.storage.list_bulks() == []
    status, started = await api.client("POST", "/api/v1/bulk", json=body, token="alice-token")
    assert status == 202, started
    for token, seen in (("alice-token", [started["id"]]), ("bob-token", [])):
        status, listed = await api.client("GET", "/api/v1/bulk", token=token)
        assert [b["id"] for b in listed["bulk_actions"]] == seen
    for method, path in (("GET", f"/api/v1/bulk/{started['id']}"), ("POST", f"/api/v1/bulk/{started['id']}/cancel")):
        status, answer = await api.client(method, path, token="bob-token")
        assert status == 404, answer


async def test_a_bulk_action_is_carried_on_by_another_engine(make_api: MakeApi) -> None:
    """Its timer is in storage: an engine stopped mid-way leaves it to another sharing the storage."""
    first = await make_api()
    job_ids = await _quarantined(first, 4)
    action = await first.engine.bulk.start("fail", job_ids, rate_per_s=4, actor="operator:ann")
    await first.wait_job(job_ids[0], "failed")
    await first.engine.stop()
    second = await make_api(storage=first.engine.storage)
    view = await _ended(second, action.id)
    assert (view["status"], view["done"]) == ("finished", 4)


def test_a_bulk_action_round_trips_through_its_dict() -> None:
    action = BulkAction("release", 3, 5.0, "operator:ann", {"params": {"n": 1}})  # type: ignore[arg-type]
    action.record(1, [("j2", "gone")], 2)
    assert BulkAction.from_dict(action.to_dict()) == action
    action.record(1, [], 1)
    assert (action.status, action.handled, action.done, action.skipped) == (BulkStatus.FINISHED, 3, 2, 1)
