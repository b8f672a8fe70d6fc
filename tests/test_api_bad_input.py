"""Bad input never gets past the API: 4xx JSON ``{"error", "field"?}`` and nothing changes.

Covers broken and hostile bodies (syntax, shape, size, depth, types, huge strings, bad Unicode),
unknown routes and methods, and a blueprint's input model.
"""

from __future__ import annotations

import json

import pytest

LIMITS = {"MAX_REQUEST_BODY_BYTES": 4096, "MAX_JSON_DEPTH": 8}


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


BAD_BODIES = {
    "invalid JSON": b'{"a": ',
    "trailing garbage": b'{"a": 1} x',
    "NaN": b'{"a": NaN}',
    "infinite number": b'{"a": 1e400}',
    "invalid UTF-8": b'{"a": "\xff\xfe"}',
    "lone surrogate": b'{"a": "\\ud800"}',
    "array": b"[1, 2]",
    "string": b'"text"',
    "number": b"3",
    "null": b"null",
    "empty array": b"[]",
    "false": b"false",
    "zero": b"0",
    "empty string": b'""',
    "too deep": json.dumps(nested(20)).encode(),
    "too deep in a list": json.dumps({"a": [[[[[[[[[[1]]]]]]]]]]}).encode(),
}


async def _job_with_task(api):
    """A job whose task w1 holds: the target of results and operations."""
    return await api.take(data={"n": 1})


# -- bodies --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", BAD_BODIES)
@pytest.mark.parametrize(
    "path",
    ["/api/v1/jobs/simple", "/api/jobs/plain", "/_worker/tasks/result", "/_worker/workers/register"],
)
async def test_bad_bodies_are_400_and_change_nothing(make_api, path, case):
    api = await make_api(**LIMITS)
    job_id, _ = await _job_with_task(api)
    before = await api.engine_job(job_id)
    workers = await api.engine.list_workers()
    status, body = await api.call("POST", path, data=BAD_BODIES[case], headers={"Content-Type": "application/json"})
    assert status == 400, body
    if case.startswith("too deep"):
        assert "nested deeper than 8" in body["error"]
    assert await api.engine_job(job_id) == before
    assert len(await api.engine.list_jobs()) == 1
    assert await api.engine.list_workers() == workers


@pytest.mark.parametrize("case", [c for c in BAD_BODIES if c not in ("null",)])
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs/{job}/retry",
        "/api/v1/jobs/{job}/release",
        "/api/jobs/{job}/fail",
        "/_public/webhooks/approval/{job}",
        "PATCH /_worker/workers/w1",
    ],
)
async def test_bad_bodies_on_operations_are_400_and_change_nothing(make_api, path, case):
    api = await make_api(**LIMITS)
    job_id, _ = await api.quarantined()
    before = await api.engine_job(job_id)
    worker = await api.engine.storage.get_worker("w1")
    method, _, path = path.rpartition(" ")
    status, body = await api.call(
        method or "POST", path.format(job=job_id), data=BAD_BODIES[case], headers={"Content-Type": "application/json"}
    )
    assert status == 400, body
    assert await api.engine_job(job_id) == before
    assert (await api.engine.storage.get_worker("w1")).info == worker.info


@pytest.mark.parametrize("path", ["/api/v1/jobs/simple", "/_worker/tasks/result", "/_worker/workers/register"])
@pytest.mark.parametrize("data", [b"", b"   \n"])
async def test_empty_body_is_400(make_api, path, data):
    api = await make_api()
    status, body = await api.call("POST", path, data=data)
    assert status == 400
    assert "empty" in body["error"]
    assert await api.engine.list_jobs() == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs/simple",
        "/_worker/tasks/result",
        "/_worker/workers/register",
        "/api/v1/jobs/{job}/release",
        "/_public/webhooks/approval/{job}",
    ],
)
async def test_body_over_the_size_limit_is_413(make_api, path):
    api = await make_api(**LIMITS)
    job_id, _ = await api.quarantined()
    before = await api.engine_job(job_id)
    huge = json.dumps({"worker_id": "w", "params": {"blob": "x" * 10_000}}).encode()
    status, body = await api.call("POST", path.format(job=job_id), data=huge)
    assert status == 413
    assert "4096" in body["error"]
    assert await api.engine_job(job_id) == before
    assert len(await api.engine.list_jobs()) == 1


async def test_nesting_up_to_the_limit_is_accepted(make_api):
    api = await make_api(**LIMITS)
    job_id = await api.create("/api/v1/jobs/simple", nested(8))
    assert (await api.wait_job(job_id, "finished"))["initial_data"] == nested(8)


# -- results with wrong types --------------------------------------------------------------------------
def _result(task, **changes):
    body = {"job_id": task["job_id"], "task_id": task["task_id"], "worker_id": "w1", "result": {"status": "success"}}
    for key, value in changes.items():
        if key.startswith("result_"):
            body["result"][key.removeprefix("result_")] = value
        elif value is None:
            body.pop(key)
        else:
            body[key] = value
    return body


RESULT_CASES = [
    ({"result_status": 5}, "result.status"),
    ({"result_status": None}, "result.status"),
    ({"result_status": ""}, "result.status"),
    ({"result_status": ["success"]}, "result.status"),
    ({"result_status": "s" * 5000}, "result.status"),
    ({"result_data": [1, 2]}, "result.data"),
    ({"result_data": "text"}, "result.data"),
    ({"result_error": "boom"}, "result.error"),
    ({"result_error": {"code": 5}}, "result.error.code"),
    ({"result_error": {"code": ["PERMANENT_ERROR"]}}, "result.error.code"),
    ({"result_error": {"code": "PERMANENT_ERROR", "message": 7}}, "result.error.message"),
    ({"result": None}, "result"),
    ({"result": "success"}, "result"),
    ({"job_id": None}, "job_id"),
    ({"job_id": 12}, "job_id"),
    ({"task_id": None}, "task_id"),
    ({"task_id": {"id": 1}}, "task_id"),
    ({"worker_id": None}, "worker_id"),
    ({"worker_id": "w" * 5000}, "worker_id"),
    ({"job_id": "j" * 5000}, "job_id"),
]


@pytest.mark.parametrize(("changes", "field"), RESULT_CASES)
async def test_result_with_wrong_types_names_the_field(make_api, changes, field):
    api = await make_api()
    job_id, task = await _job_with_task(api)
    before = await api.engine_job(job_id)
    status, body = await api.worker("POST", "/_worker/tasks/result", json=_result(task, **changes))
    assert status == 400, body
    assert body["field"] == field
    assert field in body["error"]
    assert await api.engine_job(job_id) == before
    assert (await api.job(job_id))["task"]["status"] == "assigned"
    assert (await api.result(task, "w1"))[0] == 200  # the task still takes its real result


# -- huge strings and Unicode --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/_worker/workers/register", {"worker_id": "w" * 5000}, "worker_id"),
        ("POST", "/_worker/workers/register", {"worker_id": "w", "supported_tasks": ["t"] * 5000}, "supported_tasks"),
        ("POST", "/api/v1/jobs/{job}/fail", {"reason": "r" * 5000}, "reason"),
        ("POST", "/_public/webhooks/approval/{job}", {"decision": "d" * 5000}, "decision"),
        ("POST", "/api/v1/jobs/{job}/retry", {"from_state": ""}, "from_state"),
        ("POST", "/api/v1/jobs/{job}/retry", {"from_state": 3}, "from_state"),
        ("POST", "/api/v1/jobs/{job}/retry", {"frm_state": "start"}, "frm_state"),
        ("POST", "/api/v1/jobs/{job}/release", {"params": [1]}, "params"),
        ("POST", "/api/v1/jobs/{job}/release", {"params": "x"}, "params"),
        ("POST", "/api/v1/jobs/{job}/release", {"parms": {}}, "parms"),
        ("POST", "/api/v1/jobs/{job}/fail", {"reason": 5}, "reason"),
    ],
)
async def test_bad_fields_name_the_field_and_change_nothing(make_api, method, path, body, field):
    api = await make_api()
    job_id, _ = await api.quarantined()
    before = await api.engine_job(job_id)
    status, answer = await api.client(method, path.format(job=job_id), json=body)
    assert status == 400, answer
    assert answer["field"] == field
    assert await api.engine_job(job_id) == before
    assert [w.worker_id for w in await api.engine.list_workers()] == ["w1"]


async def test_huge_unknown_state_is_409_and_huge_ids_are_404(make_api):
    api = await make_api()
    job_id, _ = await api.quarantined()
    before = await api.engine_job(job_id)
    status, _ = await api.client("POST", f"/api/v1/jobs/{job_id}/retry", json={"from_state": "s" * 3000})
    assert status == 409
    status, _ = await api.client("GET", "/api/v1/jobs/" + "j" * 3000)
    assert status == 404
    status, _ = await api.worker("PATCH", "/_worker/workers/" + "w" * 3000, json={"load": 1})
    assert status == 404
    assert await api.engine_job(job_id) == before


async def test_unicode_round_trips(make_api):
    api = await make_api()
    data = {"имя": "Ада", "emoji": "🚀✨", "cjk": "漢字", "rtl": "שלום", "zero": "a\u200bb", "nul": "x\x00y"}
    job_id = await api.create("/api/v1/jobs/simple", data)
    view = await api.wait_job(job_id, "finished")
    assert view["initial_data"] == data
    await api.register("wörker-🐍", ["echo"])
    _, listing = await api.client("GET", "/api/v1/workers")
    assert listing["workers"][0]["worker_id"] == "wörker-🐍"
    status, body = await api.client("GET", "/api/v1/jobs/%F0%9F%9A%80")
    assert status == 404
    assert "🚀" in body["error"]


async def test_unicode_result_status_fails_the_job_cleanly(make_api):
    api = await make_api()
    job_id, task = await _job_with_task(api)
    status, body = await api.result(task, "w1", "успех")
    assert status == 200
    assert body == {"status": "result_accepted_успех"}
    view = await api.wait_job(job_id, "failed")
    assert view["error_message"] == "Worker returned unhandled status: успех"


# -- routes and methods --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/nope"),
        ("GET", "/api/v1/nope"),
        ("GET", "/api/v3/jobs"),
        ("POST", "/api/v1/jobs/x/nope"),
        ("GET", "/_worker/nope"),
        ("GET", "/_public/nope"),
        ("GET", "/api/v1/jobs/x/history/extra"),
    ],
)
async def test_unknown_routes_are_404_json(make_api, method, path):
    api = await make_api()
    status, body = await api.call(method, path)
    assert status == 404
    assert path in body["error"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/api/v1/jobs/x"),
        ("PUT", "/api/v1/jobs/simple"),
        ("GET", "/_worker/tasks/result"),
        ("PUT", "/_worker/workers/register"),
        ("POST", "/_worker/workers/w1/tasks/next"),
        ("POST", "/_public/status"),
        ("POST", "/api/v1/dashboard"),
        ("PATCH", "/api/jobs"),
    ],
)
async def test_wrong_methods_are_405_json(make_api, method, path):
    api = await make_api()
    async with api.http.request(method, path) as response:
        assert response.status == 405
        assert response.content_type == "application/json"
        body = await response.json()
        assert response.headers["Allow"]
    assert method in body["error"]


# -- a blueprint's input model -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"item": "book", "quantity": 0}, "quantity"),
        ({"item": "book", "quantity": "many"}, "quantity"),
        ({"quantity": 1}, "item"),
        ({"item": ["book"], "quantity": 1}, "item"),
        ({}, "item"),
    ],
)
async def test_input_model_refuses_bad_initial_data(make_api, data, field):
    api = await make_api()
    status, body = await api.client("POST", "/api/v1/jobs/typed", json=data)
    assert status == 400
    assert body["field"] == field
    assert field in body["error"]
    assert any(d["field"] == field for d in body["details"])
    assert await api.engine.list_jobs() == []


async def test_input_model_accepts_and_normalises_good_data(make_api):
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/typed", {"item": "book", "quantity": "2"})
    view = await api.wait_job(job_id, "finished")
    assert view["initial_data"] == {"item": "book", "quantity": 2}


async def test_depth_counts_nesting_not_brackets_in_strings(make_api):
    api = await make_api(**LIMITS)
    brackets_in_text = {"note": "[[[[{{{{[[[[{{{{", "a": {"b": [1, 2]}}
    status, body = await api.call("POST", "/api/v1/jobs/simple", json=brackets_in_text)
    assert status == 202, body
    status, body = await api.call("POST", "/api/v1/jobs/simple", json=nested(8))  # 8 levels: the limit
    assert status == 202, body
    status, body = await api.call("POST", "/api/v1/jobs/simple", json={"x": "[" * 20, **nested(9)})
    assert (status, body["error"]) == (400, "request body is nested deeper than 8 levels")
