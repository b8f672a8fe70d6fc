"""The worker API over real HTTP: register, heartbeat, long poll, results, and the WebSocket."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiohttp import WSServerHandshakeError
from hypothesis import given, settings
from hypothesis import strategies as st
from support.api import TASK_WIRE_FIELDS

from avtomatika.api.payloads import TaskResult, plain_task_result

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SDK_REGISTRATION = {
    "worker_id": "sdk-1",
    "worker_type": "cpu",
    "supported_tasks": ["echo"],
    "max_concurrent_tasks": 2,
    "cost_per_skill": {"echo": 0.1},
    "installed_models": [{"name": "tiny", "version": "1.0"}],
    "hostname": "box",
    "ip_address": "10.0.0.7",
    "resources": {"max_concurrent_tasks": 2, "cpu_cores": 4, "gpu_info": None},
}


# -- registration and heartbeats -----------------------------------------------------------------------
async def test_register_an_sdk_worker(make_api):
    api = await make_api()
    status, body = await api.worker("POST", "/_worker/workers/register", json=SDK_REGISTRATION)
    assert status == 200
    assert body["status"] == "registered"
    _, listing = await api.client("GET", "/api/workers")
    [worker] = listing["workers"]
    for key, value in SDK_REGISTRATION.items():
        assert worker[key] == value  # unknown fields are kept


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"supported_tasks": ["echo"]}, "worker_id"),
        ({"worker_id": "", "supported_tasks": ["echo"]}, "worker_id"),
        ({"worker_id": 5}, "worker_id"),
        ({"worker_id": None}, "worker_id"),
        ({"worker_id": "w", "supported_tasks": "echo"}, "supported_tasks"),
        ({"worker_id": "w", "supported_tasks": [1]}, "supported_tasks.0"),
        ({"worker_id": "w", "max_concurrent_tasks": "two"}, "max_concurrent_tasks"),
        ({"worker_id": "w", "max_concurrent_tasks": 0}, "max_concurrent_tasks"),
        ({"worker_id": "w", "resources": [1]}, "resources"),
        ({"worker_id": "w", "hot_cache": "echo"}, "hot_cache"),
        ({"worker_id": "w", "load": "high"}, "load"),
        ({"worker_id": "w", "cost": {"eur": 1}}, "cost"),
        ({"worker_id": "w", "status": 3}, "status"),
    ],
)
async def test_register_refuses_bad_records_naming_the_field(make_api, record, field):
    api = await make_api()
    status, body = await api.worker("POST", "/_worker/workers/register", json=record)
    assert status == 400
    assert body["field"] == field
    assert field in body["error"]
    assert await api.engine.list_workers() == []


async def test_heartbeat_merges_the_record(make_api):
    api = await make_api()
    await api.register("w1", ["echo"], cost=2.0)
    status, body = await api.worker(
        "PATCH", "/_worker/workers/w1", json={"load": 0.5, "status": "busy", "hot_cache": ["echo"], "extra": [1]}
    )
    assert status == 200
    assert body["worker_id"] == "w1"
    assert body["supported_tasks"] == ["echo"]
    assert body["cost"] == 2.0
    assert (body["load"], body["status"], body["hot_cache"], body["extra"]) == (0.5, "busy", ["echo"], [1])
    assert body["alive"] is True
    stored = await api.engine.storage.get_worker("w1")
    assert stored.info["load"] == 0.5


async def test_an_sdk_heartbeat_is_accepted(make_api):
    api = await make_api()
    await api.worker("POST", "/_worker/workers/register", json=SDK_REGISTRATION)
    heartbeat = {
        "load": 1,
        "status": "idle",
        "supported_tasks": ["echo"],
        "hot_cache": ["tiny"],
        "skill_dependencies": {"echo": ["tiny"]},
        "hot_skills": ["echo"],
    }
    status, body = await api.worker("PATCH", "/_worker/workers/sdk-1", json=heartbeat)
    assert status == 200
    for key, value in heartbeat.items():
        assert body[key] == value


@pytest.mark.parametrize("body", [None, b"", b"{}", b"  \n"])
async def test_heartbeat_without_changes_refreshes_the_ttl(make_api, body):
    api = await make_api()
    await api.register("w1")
    before = await api.engine.storage.get_worker("w1")
    await asyncio.sleep(0.002)
    status, answer = await api.worker("PATCH", "/_worker/workers/w1", data=body)
    assert status == 200
    assert answer == {"status": "ttl_refreshed"}
    after = await api.engine.storage.get_worker("w1")
    assert after.expires_at > before.expires_at
    assert after.info == before.info


async def test_heartbeat_of_an_unknown_worker_is_404(make_api):
    api = await make_api()
    for body in (None, {"load": 1}):
        status, answer = await api.worker("PATCH", "/_worker/workers/ghost", json=body)
        assert status == 404
        assert "ghost" in answer["error"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"supported_tasks": 5}, "supported_tasks"),
        ({"hot_cache": [1, 2]}, "hot_cache.0"),
        ({"load": "busy"}, "load"),
        ({"max_concurrent_tasks": -1}, "max_concurrent_tasks"),
    ],
)
async def test_heartbeat_refuses_bad_fields(make_api, changes, field):
    api = await make_api()
    await api.register("w1")
    before = await api.engine.storage.get_worker("w1")
    status, body = await api.worker("PATCH", "/_worker/workers/w1", json=changes)
    assert status == 400
    assert body["field"] == field
    assert (await api.engine.storage.get_worker("w1")).info == before.info


async def test_a_bad_heartbeat_cannot_break_dispatching(make_api):
    api = await make_api()
    await api.register("w1")
    await api.worker("PATCH", "/_worker/workers/w1", json={"supported_tasks": 5})
    _, task = await api.take(worker_id="w1")
    assert task["type"] == "echo"


# -- long poll -----------------------------------------------------------------------------------------
async def test_long_poll_answers_204_when_nothing_arrives(make_api):
    api = await make_api(WORKER_POLL_TIMEOUT_SECONDS=0.05)
    await api.register("w1")
    async with api.http.get("/_worker/workers/w1/tasks/next") as response:
        assert response.status == 204
        assert await response.read() == b""


async def test_long_poll_of_an_unknown_worker_is_404(make_api):
    api = await make_api(WORKER_POLL_TIMEOUT_SECONDS=0.05)
    status, body = await api.worker("GET", "/_worker/workers/ghost/tasks/next")
    assert status == 404
    assert "ghost" in body["error"]


async def test_long_poll_returns_exactly_the_wire_task(make_api):
    api = await make_api()
    await api.register("w1")
    job_id = await api.create("/api/v1/jobs/work", {"n": 5})
    task = await api.next_task("w1")
    assert set(task) == TASK_WIRE_FIELDS
    assert task["job_id"] == job_id
    assert task["type"] == "echo"
    assert task["params"] == {"n": 5}
    assert task["tracing_context"] == {}
    assert task["priority"] == 0.0
    uuid.UUID(task["task_id"])
    view = await api.job(job_id)
    assert view["task"]["task_id"] == task["task_id"]
    assert (view["task"]["status"], view["task"]["worker_id"]) == ("assigned", "w1")


async def test_a_waiting_long_poll_gets_a_task_dispatched_meanwhile(make_api):
    api = await make_api()
    await api.register("w1")
    poll = asyncio.ensure_future(api.next_task("w1"))
    await asyncio.sleep(0.05)
    assert not poll.done()
    job_id = await api.create("/api/v1/jobs/work", {"n": 1})
    task = await asyncio.wait_for(poll, 5)
    assert task["job_id"] == job_id


@pytest.mark.parametrize(
    ("header", "context"),
    [
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", {"traceparent": TRACEPARENT}),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", {"traceparent": TRACEPARENT}),
        ("not a trace <script>", {}),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", {}),
        ("", {}),
    ],
)
async def test_a_valid_traceparent_reaches_the_worker(make_api, header, context):
    api = await make_api()
    await api.register("w1")
    status, _ = await api.client("POST", "/api/v1/jobs/work", json={}, headers={"traceparent": header})
    assert status == 202
    task = await api.next_task("w1")
    assert task["tracing_context"] == context


# -- results -------------------------------------------------------------------------------------------
async def test_result_over_http_moves_the_job_on(make_api):
    api = await make_api()
    job_id, task = await api.take(data={"n": 2})
    status, body = await api.result(task, "w1", data={"doubled": 4, "text": "привет 🌍"})
    assert status == 200
    assert body == {"status": "result_accepted_success"}
    view = await api.wait_job(job_id, "finished")
    assert view["state_history"] == {"doubled": 4, "text": "привет 🌍"}


async def test_duplicate_result_is_accepted_and_changes_nothing(make_api):
    api = await make_api()
    job_id, task = await api.take()
    assert (await api.result(task, "w1", data={"first": 1}))[0] == 200
    await api.wait_job(job_id, "finished")
    before = await api.engine_job(job_id)
    status, body = await api.result(task, "w1", data={"second": 2})
    assert status == 200
    assert body["status"].startswith("result_accepted_")
    assert await api.engine_job(job_id) == before


async def test_result_from_a_foreign_worker_is_403(make_api):
    api = await make_api()
    job_id, task = await api.take()
    await api.register("w2")
    before = await api.engine_job(job_id)
    status, body = await api.result(task, "w2", data={"stolen": True})
    assert status == 403
    assert task["task_id"] in body["error"]
    assert await api.engine_job(job_id) == before
    assert (await api.result(task, "w1"))[0] == 200  # the rightful worker still can


async def test_result_for_an_unknown_task_is_404(make_api):
    api = await make_api()
    job_id, task = await api.take()
    other_job = await api.create()
    before = await api.engine_job(job_id)
    for job, task_id in [(job_id, str(uuid.uuid4())), (other_job, task["task_id"])]:
        status, body = await api.result({"job_id": job, "task_id": task_id}, "w1")
        assert status == 404, body
    assert await api.engine_job(job_id) == before


async def test_stale_result_after_cancel_is_409(make_api):
    api = await make_api()
    job_id, task = await api.take()
    status, _ = await api.client("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert status == 200
    before = await api.engine_job(job_id)
    status, body = await api.result(task, "w1", data={"late": True})
    assert status == 409
    assert "withdrawn" in body["error"]
    assert await api.engine_job(job_id) == before
    assert before["status"] == "cancelled"


@pytest.mark.parametrize(
    ("code", "status"),
    [("INVALID_INPUT_ERROR", "failed"), ("PERMANENT_ERROR", "quarantined")],
)
async def test_failure_codes(make_api, code, status):
    api = await make_api()
    job_id, task = await api.take()
    answer, body = await api.result(task, "w1", "failure", error={"code": code, "message": "nope"})
    assert (answer, body) == (200, {"status": "result_accepted_failure"})
    view = await api.wait_job(job_id, status)
    assert view["error_message"] == f"{code}: nope"


async def test_transient_failure_is_dispatched_again(make_api):
    api = await make_api()
    job_id, task = await api.take()
    status, _ = await api.result(task, "w1", "failure", error={"code": "TRANSIENT_ERROR", "message": "flaky"})
    assert status == 200
    again = await api.next_task("w1")
    assert again["job_id"] == job_id
    assert again["task_id"] != task["task_id"]
    view = await api.job(job_id)
    assert view["retry_count"] == 1


# -- WebSocket -----------------------------------------------------------------------------------------
async def _progress(api, job_id, value):
    return await api.wait_job(job_id, lambda v: v["task"] is not None and v["task"]["progress"] == value)


async def test_websocket_progress_with_event_or_type(make_api):
    api = await make_api()
    job_id, task = await api.take()
    async with api.http.ws_connect("/_worker/ws/w1") as ws:
        await ws.send_json(
            {
                "event": "progress_update",
                "job_id": job_id,
                "task_id": task["task_id"],
                "progress": 0.25,
                "message": "a quarter",
            }
        )
        view = await _progress(api, job_id, 0.25)
        assert view["task"]["progress_message"] == "a quarter"
        await ws.send_json(  # the worker SDK 1.0b1 writes "type"
            {
                "type": "progress_update",
                "job_id": job_id,
                "task_id": task["task_id"],
                "progress": 0.75,
                "message": "three quarters",
            }
        )
        view = await _progress(api, job_id, 0.75)
        assert view["task"]["progress_message"] == "three quarters"
        await ws.send_str("not json")  # ignored, the connection stays
        await ws.send_json({"event": "something_else"})
        await ws.send_json({"event": "progress_update", "job_id": job_id, "task_id": task["task_id"], "progress": 1})
        await _progress(api, job_id, 1.0)


async def test_websocket_progress_for_another_workers_task_is_ignored(make_api):
    api = await make_api()
    job_id, task = await api.take()
    await api.register("w2")
    async with api.http.ws_connect("/_worker/ws/w2") as ws:
        await ws.send_json({"event": "progress_update", "job_id": job_id, "task_id": task["task_id"], "progress": 0.5})
        await ws.send_json({"event": "progress_update", "job_id": job_id, "task_id": "nope", "progress": 0.6})
        await asyncio.sleep(0.05)
    assert (await api.job(job_id))["task"]["progress"] is None


async def test_cancel_reaches_the_worker_over_its_websocket(make_api):
    api = await make_api()
    job_id, task = await api.take()
    async with api.http.ws_connect("/_worker/ws/w1") as ws:
        await api.attached("w1")
        status, _ = await api.client("POST", f"/api/v1/jobs/{job_id}/cancel")
        assert status == 200
        message = await asyncio.wait_for(ws.receive_json(), 5)
    assert message == {"command": "cancel_task", "type": "cancel_task", "task_id": task["task_id"], "job_id": job_id}


async def test_websocket_of_an_unknown_worker_is_refused(make_api):
    api = await make_api()
    with pytest.raises(WSServerHandshakeError) as refused:
        async with api.http.ws_connect("/_worker/ws/ghost"):
            pass
    assert refused.value.status == 404


async def test_anonymous_websocket_gets_cancels_and_reports_progress(make_api):
    """SDK 1.0b1 connects to /_worker/ws under the global token, with no worker id."""
    api = await make_api()
    job_id, task = await api.take()
    async with api.http.ws_connect("/_worker/ws") as ws:
        await ws.send_json({"type": "progress_update", "job_id": job_id, "task_id": task["task_id"], "progress": 0.5})
        await _progress(api, job_id, 0.5)
        status, _ = await api.client("POST", f"/api/v1/jobs/{job_id}/cancel")
        assert status == 200
        message = await asyncio.wait_for(ws.receive_json(), 5)
    assert message == {"command": "cancel_task", "type": "cancel_task", "task_id": task["task_id"], "job_id": job_id}


async def test_worker_confirming_our_cancel_gets_200_and_nothing_changes(make_api):
    api = await make_api()
    job_id, task = await api.take()
    status, _ = await api.client("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert status == 200
    before = await api.engine_job(job_id)
    status, body = await api.result(task, "w1", "cancelled")
    assert status == 200
    assert body == {"status": "result_accepted_cancelled"}
    assert await api.engine_job(job_id) == before


# -- reading a result body without the model ------------------------------------------------------
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: st.lists(children, max_size=2) | st.dictionaries(st.text(max_size=3), children, max_size=2),
    max_leaves=4,
)
_IDS = st.sampled_from(["j", "x" * 200])
_BAD_IDS = st.sampled_from(["", "x" * 201]) | _JSON_VALUES
_STATUSES = st.sampled_from(["success", "s" * 100])
_BAD_STATUSES = st.sampled_from(["", "s" * 101]) | _JSON_VALUES
_ERRORS = st.none() | st.fixed_dictionaries({}, optional={"code": _JSON_VALUES, "message": _JSON_VALUES})
_RESULTS = st.fixed_dictionaries(
    {"status": _STATUSES | _BAD_STATUSES},
    optional={"data": st.dictionaries(st.text(max_size=3), _JSON_VALUES, max_size=2) | _JSON_VALUES},
) | st.fixed_dictionaries({}, optional={"status": _STATUSES, "error": _ERRORS, "extra": _JSON_VALUES})
#: Mostly bodies of the right shape with one or two fields wrong, since any bad field sends them to the model.
_BODIES = st.fixed_dictionaries(
    {"job_id": _IDS, "task_id": _IDS, "worker_id": _IDS, "result": _RESULTS},
    optional={"other": _JSON_VALUES},
) | st.fixed_dictionaries(
    {}, optional={"job_id": _IDS | _BAD_IDS, "task_id": _IDS, "worker_id": _IDS, "result": _RESULTS | _JSON_VALUES}
)


@settings(max_examples=300, deadline=None)
@given(_BODIES | _JSON_VALUES)
def test_a_result_read_by_hand_is_what_the_model_reads(body):
    """plain_task_result accepts only what TaskResult accepts, and gives back what it does."""
    plain = plain_task_result(body)
    if plain is None:
        return
    model = TaskResult.model_validate(body)
    assert plain == (model.job_id, model.task_id, model.worker_id, model.result.model_dump(exclude_none=True))


def test_the_usual_result_is_read_by_hand():
    body = {"job_id": "j", "task_id": "t", "worker_id": "w", "result": {"status": "success", "data": {"a": None}}}
    assert plain_task_result(body) == ("j", "t", "w", {"status": "success", "data": {"a": None}})
