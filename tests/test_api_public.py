"""Public routes: status, health, and the human-approval webhook."""

from __future__ import annotations

import uuid

import pytest
from support.api import UnreachableStorage


async def test_status(make_api):
    api = await make_api()
    assert await api.call("GET", "/_public/status") == (200, {"status": "ok"})


async def test_health(make_api):
    api = await make_api()
    status, body = await api.call("GET", "/_public/health")
    assert status == 200
    assert body["status"] == "healthy"


async def test_health_when_storage_is_unreachable(make_api):
    api = await make_api(storage=UnreachableStorage())
    status, body = await api.call("GET", "/_public/health")
    assert status == 503
    assert body["status"] == "unhealthy"
    assert "storage host is down" in body["error"]


@pytest.mark.parametrize(("decision", "state"), [("approve", "shipped"), ("reject", "dropped")])
async def test_approval_drives_the_job_to_the_chosen_transition(make_api, decision, state):
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/approval", {"release": "1.2"})
    view = await api.wait_job(job_id, "waiting_for_human")
    assert view["approval"] == {"message": "Ship it?", "choices": ["approve", "reject"]}
    status, body = await api.client("POST", f"/_public/webhooks/approval/{job_id}", json={"decision": decision})
    assert status == 200
    assert body["job_id"] == job_id
    view = await api.wait_job(job_id, "finished")
    assert view["current_state"] == state
    assert view["state_history"]["approval"]["decision"] == decision


async def test_unknown_decision_is_409_listing_the_choices(make_api):
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/approval")
    await api.wait_job(job_id, "waiting_for_human")
    before = await api.engine_job(job_id)
    status, body = await api.client("POST", f"/_public/webhooks/approval/{job_id}", json={"decision": "maybe"})
    assert status == 409
    assert "maybe" in body["error"]
    assert "approve" in body["error"]
    assert "reject" in body["error"]
    assert await api.engine_job(job_id) == before


async def test_approval_of_a_job_not_waiting_for_one_is_409(make_api):
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/simple")
    await api.wait_job(job_id, "finished")
    status, body = await api.client("POST", f"/_public/webhooks/approval/{job_id}", json={"decision": "approve"})
    assert status == 409
    assert "finished" in body["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "decision"), ({"decision": ""}, "decision"), ({"decision": 1}, "decision"), ([], None)],
)
async def test_approval_with_a_bad_body_is_400(make_api, body, field):
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/approval")
    await api.wait_job(job_id, "waiting_for_human")
    before = await api.engine_job(job_id)
    status, answer = await api.client("POST", f"/_public/webhooks/approval/{job_id}", json=body)
    assert status == 400
    assert answer.get("field") == field
    assert await api.engine_job(job_id) == before


async def test_approval_of_an_unknown_job_is_404(make_api):
    api = await make_api()
    status, _ = await api.client("POST", f"/_public/webhooks/approval/{uuid.uuid4()}", json={"decision": "approve"})
    assert status == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/_public/debug/flush_db"), ("GET", "/_public/debug/flush_db"), ("DELETE", "/_public/status")],
)
async def test_no_public_route_changes_anything(make_api, method, path):
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/simple")
    status, _ = await api.call(method, path)
    assert status in (404, 405)
    assert await api.engine.get_job(job_id) is not None
