"""The client API over real HTTP: jobs, operator actions, blueprints, graphs, workers, dashboard."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from support.api import CLIENT_HEADER, JOB_VIEW_EXTRAS, JOB_VIEW_FIELDS, WORKER_HEADER
from support.blueprints import work

from avtomatika import StateMachineBlueprint
from avtomatika.api.payloads import VIEW_TASKS
from avtomatika.api.views import iso
from avtomatika.storage import MemoryStorage

PREFIXES = ["/api/v1", "/api"]


# -- creating and reading jobs ---------------------------------------------------------------------
async def test_create_on_versioned_endpoint(make_api):
    api = await make_api()
    status, body = await api.client("POST", "/api/v1/jobs/simple", json={"who": "ada"})
    assert status == 202
    assert set(body) == {"status", "job_id"}
    assert body["status"] == "accepted"
    uuid.UUID(body["job_id"])
    view = await api.wait_job(body["job_id"], "finished")
    assert view["blueprint_name"] == "simple"
    assert view["initial_data"] == {"who": "ada"}
    assert view["state_history"] == {"started": True}


async def test_create_on_unversioned_endpoint(make_api):
    api = await make_api()
    job_id = await api.create("/api/jobs/plain", {"x": 1})
    view = await api.wait_job(job_id, "finished")
    assert view["blueprint_name"] == "plain"
    assert view["current_state"] == "done"


@pytest.mark.parametrize("path", ["/api/jobs/simple", "/api/v1/jobs/plain", "/api/v2/jobs/simple"])
async def test_blueprint_endpoint_only_under_its_own_prefix(make_api, path):
    api = await make_api()
    status, _ = await api.client("POST", path, json={})
    assert status in (404, 405)
    assert await api.engine.list_jobs() == []


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_job_view_has_the_protocol_fields(make_api, prefix):
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/work", {"n": 3, "note": "ß"})
    view = await api.wait_job(job_id, "waiting_for_worker")
    view = await api.job(job_id, prefix=prefix)
    assert set(view) >= JOB_VIEW_FIELDS
    assert set(view) - JOB_VIEW_FIELDS <= JOB_VIEW_EXTRAS
    assert view["id"] == job_id
    assert view["blueprint_name"] == "work"
    assert view["status"] == "waiting_for_worker"
    assert view["current_state"] == "start"
    assert view["initial_data"] == {"n": 3, "note": "ß"}
    assert view["state_history"] == {}
    assert view["error_message"] is None
    assert view["retry_count"] == 0
    created, updated = datetime.fromisoformat(view["created_at"]), datetime.fromisoformat(view["updated_at"])
    assert created <= updated
    task = view["task"]
    assert task["type"] == "echo"
    assert task["params"] == {"n": 3}
    assert task["status"] == "queued"


wide = StateMachineBlueprint("wide", api_version="v1", api_endpoint="/jobs/wide")


@wide.handler_for("start", is_start=True)
async def wide_start(context):
    for index in range(context.initial_data["count"]):
        context.actions.dispatch_task("echo", params={"index": index}, transitions={"success": "gather"})


@wide.aggregator_for("gather")
async def wide_gather(context):
    context.actions.transition_to("done")


@wide.handler_for("done", is_end=True)
async def wide_done(context):
    pass


async def test_a_fan_out_view_shows_its_first_tasks_and_counts_them_all(make_api):
    api = await make_api(wide, work)
    few = await api.wait_job(await api.create("/api/v1/jobs/wide", {"count": 3}), "waiting_for_parallel_tasks")
    assert few["task"] is None
    assert [t["params"] for t in few["tasks"]] == [{"index": i} for i in range(3)]
    assert few["task_count"] == 3

    count = VIEW_TASKS + 5
    many = await api.wait_job(await api.create("/api/v1/jobs/wide", {"count": count}), "waiting_for_parallel_tasks")
    assert many["task"] is None
    assert [t["params"] for t in many["tasks"]] == [{"index": i} for i in range(VIEW_TASKS)]
    assert many["task_count"] == count

    single = await api.wait_job(await api.create("/api/v1/jobs/work", {"n": 1}), "waiting_for_worker")
    assert (single["task"]["params"], single["tasks"], single["task_count"]) == ({"n": 1}, [], 1)
    await api.client("POST", f"/api/v1/jobs/{single['id']}/cancel")
    assert (await api.job(single["id"]))["task_count"] == 0


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_unknown_job_is_404(make_api, prefix):
    api = await make_api()
    for method, path in [
        ("GET", f"{prefix}/jobs/{uuid.uuid4()}"),
        ("POST", f"{prefix}/jobs/{uuid.uuid4()}/cancel"),
        ("POST", f"{prefix}/jobs/{uuid.uuid4()}/retry"),
        ("POST", f"{prefix}/jobs/{uuid.uuid4()}/release"),
        ("POST", f"{prefix}/jobs/{uuid.uuid4()}/fail"),
    ]:
        status, body = await api.client(method, path)
        assert status == 404, (path, body)
        assert "not found" in body["error"]


SECRETS = {
    "client token": "tok-QZX-client-7781",
    "worker token": "tok-QZX-worker-5512",
    "custom header": "hdr-QZX-custom-4410",
    "authorization": "hdr-QZX-bearer-9921",
    "cookie": "hdr-QZX-cookie-3310",
    "worker record token": "rec-QZX-token-1234",
    "worker record api key": "rec-QZX-apikey-5678",
}


async def test_no_token_or_request_header_in_any_response(make_api):
    api = await make_api(
        client_token=SECRETS["client token"],
        worker_token=SECRETS["worker token"],
        CLIENT_TOKEN=SECRETS["client token"],
        GLOBAL_WORKER_TOKEN=SECRETS["worker token"],
    )
    extra = {
        "X-Custom-Header": SECRETS["custom header"],
        "Authorization": f"Bearer {SECRETS['authorization']}",
        "Cookie": f"session={SECRETS['cookie']}",
    }
    await api.worker(
        "POST",
        "/_worker/workers/register",
        json={
            "worker_id": "w1",
            "supported_tasks": ["echo"],
            "token": SECRETS["worker record token"],
            "resources": {"max_concurrent_tasks": 2, "api_key": SECRETS["worker record api key"]},
        },
        headers=extra,
    )
    await api.worker("PATCH", "/_worker/workers/w1", json={"load": 0.5}, headers=extra)
    status, body = await api.client("POST", "/api/v1/jobs/work", json={"n": 1}, headers=extra)
    assert status == 202
    job_id = body["job_id"]
    task = await api.next_task("w1")
    await api.result(task, "w1", "failure", error={"code": "PERMANENT_ERROR", "message": "bad"})
    await api.wait_job(job_id, "quarantined")
    simple_id = (await api.client("POST", "/api/jobs/plain", json={}, headers=extra))[1]["job_id"]
    for prefix in PREFIXES:
        for path in [
            f"/jobs/{job_id}",
            f"/jobs/{simple_id}",
            "/jobs",
            "/jobs?status=quarantined",
            "/quarantine",
            "/workers",
            "/dashboard",
            "/blueprints",
            f"/jobs/{uuid.uuid4()}",
            "/jobs?status=nope",
        ]:
            await api.client("GET", prefix + path, headers=extra)
    await api.client("POST", f"/api/v1/jobs/{job_id}/release", json={"params": {"extra": 1}}, headers=extra)
    await api.client("POST", f"/api/v1/jobs/{job_id}/cancel", headers=extra)
    await api.client("POST", f"/api/v1/jobs/{job_id}/retry", json={}, headers=extra)
    await api.client("POST", f"/api/v1/jobs/{job_id}/fail", json={"reason": "done"}, headers=extra)
    await api.client("GET", f"/api/v1/jobs/{job_id}", headers=extra)
    await api.client("GET", "/api/v1/jobs", headers={CLIENT_HEADER: "wrong", **extra})
    await api.worker("GET", "/_worker/workers/w1/tasks/next", headers={WORKER_HEADER: "wrong", **extra})
    await api.call("GET", "/_public/status", headers=extra)
    assert len(api.responses) > 30
    for response in api.responses:
        for name, secret in SECRETS.items():
            assert secret not in response, f"the {name} leaked into a response: {response[:500]}"


# -- listing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_list_jobs_filters_and_pages(make_api, prefix):
    api = await make_api()
    work_ids = [await api.create("/api/v1/jobs/work", {"n": i}) for i in range(3)]
    simple_ids = [await api.create("/api/v1/jobs/simple") for _ in range(2)]
    for job_id in simple_ids:
        await api.wait_job(job_id, "finished")
    for job_id in work_ids:
        await api.wait_job(job_id, "waiting_for_worker")

    status, body = await api.client("GET", f"{prefix}/jobs")
    assert status == 200
    assert [j["id"] for j in body["jobs"]] == [*reversed(simple_ids), *reversed(work_ids)]  # newest first

    _, body = await api.client("GET", f"{prefix}/jobs?status=finished")
    assert {j["id"] for j in body["jobs"]} == set(simple_ids)
    assert {j["status"] for j in body["jobs"]} == {"finished"}

    _, body = await api.client("GET", f"{prefix}/jobs?blueprint=work")
    assert {j["id"] for j in body["jobs"]} == set(work_ids)

    _, body = await api.client("GET", f"{prefix}/jobs?blueprint=work&status=finished")
    assert body["jobs"] == []

    _, body = await api.client("GET", f"{prefix}/jobs?limit=2")
    assert [j["id"] for j in body["jobs"]] == list(reversed(simple_ids))

    _, body = await api.client("GET", f"{prefix}/jobs?limit=2&offset=1")
    assert [j["id"] for j in body["jobs"]] == [simple_ids[0], work_ids[2]]

    _, body = await api.client("GET", f"{prefix}/jobs?offset=5")
    assert body["jobs"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=nope", "status"),
        ("status=FINISHED", "status"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("offset=1.5", "offset"),
        ("offset=-3", "offset"),
    ],
)
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_list_jobs_bad_query_names_the_field(make_api, prefix, query, field):
    api = await make_api()
    status, body = await api.client("GET", f"{prefix}/jobs?{query}")
    assert status == 400
    assert body["field"] == field
    assert field in body["error"]


# -- operations ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_cancel_a_waiting_job(make_api, prefix):
    api = await make_api()
    job_id = await api.create()
    await api.wait_job(job_id, "waiting_for_worker")
    status, body = await api.client("POST", f"{prefix}/jobs/{job_id}/cancel")
    assert status == 200
    assert body == {"status": "cancelled", "job_id": job_id}
    view = await api.job(job_id)
    assert view["status"] == "cancelled"
    assert view["task"] is None
    assert await api.engine.storage.queue_lengths() in ({}, {"echo": 0})

    status, body = await api.client("POST", f"{prefix}/jobs/{job_id}/cancel")
    assert status == 409
    assert "cancelled" in body["error"]


async def test_cancel_withdraws_the_task_from_its_queue(make_api):
    api = await make_api(WORKER_POLL_TIMEOUT_SECONDS=0.1)
    job_id = await api.create()
    await api.wait_job(job_id, "waiting_for_worker")
    await api.client("POST", f"/api/v1/jobs/{job_id}/cancel")
    await api.register("late")
    status, _ = await api.worker("GET", "/_worker/workers/late/tasks/next")
    assert status == 204


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_fail_then_retry_from_a_state(make_api, prefix):
    api = await make_api(WORKER_POLL_TIMEOUT_SECONDS=0.05)
    job_id = await api.create("/api/v1/jobs/work", {"n": 2})
    first = await api.wait_job(job_id, "waiting_for_worker")

    status, body = await api.client("POST", f"{prefix}/jobs/{job_id}/retry", json={"from_state": "start"})
    assert status == 409  # not failed yet
    assert "waiting_for_worker" in body["error"]

    status, body = await api.client("POST", f"{prefix}/jobs/{job_id}/fail", json={"reason": "operator says no"})
    assert status == 200
    assert body == {"status": "failed", "job_id": job_id}
    failed = await api.job(job_id)
    assert failed["status"] == "failed"
    assert failed["error_message"] == "operator says no"

    status, body = await api.client("POST", f"{prefix}/jobs/{job_id}/fail")
    assert status == 409

    status, body = await api.client("POST", f"{prefix}/jobs/{job_id}/retry", json={"from_state": "nowhere"})
    assert status == 409
    assert "nowhere" in body["error"]
    assert (await api.job(job_id))["status"] == "failed"

    status, body = await api.client("POST", f"{prefix}/jobs/{job_id}/retry", json={"from_state": "start"})
    assert status == 200
    assert body["job_id"] == job_id
    assert body["current_state"] == "start"
    again = await api.wait_job(job_id, "waiting_for_worker")
    assert again["task"]["task_id"] != first["task"]["task_id"]
    assert again["task"]["params"] == {"n": 2}
    assert again["error_message"] is None


async def test_retry_without_body_restarts_the_current_state(make_api):
    api = await make_api()
    job_id = await api.create()
    await api.wait_job(job_id, "waiting_for_worker")
    await api.client("POST", f"/api/jobs/{job_id}/cancel")
    status, body = await api.client("POST", f"/api/jobs/{job_id}/retry")
    assert status == 200, body
    await api.wait_job(job_id, "waiting_for_worker")


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_release_with_params_merges_them_into_the_next_task(make_api, prefix):
    api = await make_api()
    job_id, task = await api.quarantined(data={"n": 4})
    view = await api.job(job_id)
    assert view["status"] == "quarantined"
    assert view["error_message"] == "PERMANENT_ERROR: model file is corrupt"
    assert view["task"]["params"] == {"n": 4}

    status, body = await api.client("GET", f"{prefix}/quarantine")
    assert status == 200
    assert [j["id"] for j in body["jobs"]] == [job_id]
    assert body["jobs"][0]["task"]["params"] == {"n": 4}

    status, body = await api.client("POST", f"{prefix}/jobs/{job_id}/release", json={"params": {"extra": "yes"}})
    assert status == 200, body
    assert body["job_id"] == job_id
    assert body["status"] == "waiting_for_worker"

    again = await api.next_task("w1")
    assert again["job_id"] == job_id
    assert again["task_id"] != task["task_id"]
    assert again["params"] == {"n": 4, "extra": "yes"}
    status, body = await api.result(again, "w1", data={"answer": 42})
    assert status == 200
    view = await api.wait_job(job_id, "finished")
    assert view["state_history"] == {"answer": 42}
    _, body = await api.client("GET", f"{prefix}/quarantine")
    assert body["jobs"] == []


async def test_release_as_is_and_release_of_a_running_job(make_api):
    api = await make_api()
    job_id, _ = await api.quarantined(data={"n": 9})
    status, _ = await api.client("POST", f"/api/jobs/{job_id}/release")
    assert status == 200
    assert (await api.next_task("w1"))["params"] == {"n": 9}
    status, body = await api.client("POST", f"/api/jobs/{job_id}/release")
    assert status == 409
    assert "quarantined" in body["error"]


async def test_fail_a_quarantined_job(make_api):
    api = await make_api()
    job_id, _ = await api.quarantined()
    status, body = await api.client("POST", f"/api/v1/jobs/{job_id}/fail", json={"reason": "not worth it"})
    assert status == 200
    assert body["status"] == "failed"
    view = await api.job(job_id)
    assert view["status"] == "failed"
    reason, cause = view["error_message"].split(" · root cause: ")
    assert reason == "not worth it"
    assert cause.startswith("PERMANENT_ERROR")


# -- blueprints, graphs, workers, dashboard ------------------------------------------------------------
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_blueprints_list(make_api, prefix):
    api = await make_api()
    status, body = await api.client("GET", f"{prefix}/blueprints")
    assert status == 200
    by_name = {b["name"]: b for b in body["blueprints"]}
    assert set(by_name) == {"simple", "plain", "work", "approval", "typed"}
    assert by_name["simple"]["endpoint"] == "/api/v1/jobs/simple"
    assert by_name["plain"]["endpoint"] == "/api/jobs/plain"
    assert by_name["work"]["start_state"] == "start"
    assert by_name["work"]["end_states"] == ["done"]
    assert set(by_name["approval"]["states"]) == {"start", "shipped", "dropped"}
    assert isinstance(by_name["work"]["version"], str)


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_blueprint_graph_as_dot(make_api, prefix):
    api = await make_api()
    async with api.http.get(f"{prefix}/blueprints/approval/graph") as response:
        assert response.status == 200
        assert response.content_type == "text/vnd.graphviz"
        text = await response.text()
    assert "digraph" in text
    for state in ("start", "shipped", "dropped"):
        assert state in text


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_blueprint_graph_as_svg(make_api, prefix):
    import xml.etree.ElementTree as ET

    api = await make_api()
    async with api.http.get(f"{prefix}/blueprints/work/graph?format=svg") as response:
        assert response.status == 200
        assert response.content_type == "image/svg+xml"
        text = await response.text()
    root = ET.fromstring(text[text.index("<svg") :])
    titles = {el.text for el in root.iter("{http://www.w3.org/2000/svg}title")}
    assert {"start", "done"} <= titles


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_blueprint_graph_errors(make_api, prefix):
    api = await make_api()
    status, body = await api.client("GET", f"{prefix}/blueprints/nope/graph")
    assert status == 404
    assert "nope" in body["error"]
    status, body = await api.client("GET", f"{prefix}/blueprints/work/graph?format=gif")
    assert status == 400
    assert body["field"] == "format"


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_workers_list_never_echoes_secrets(make_api, prefix):
    api = await make_api()
    await api.register(
        "gpu-1",
        ["echo", "draw"],
        token="tok-worker-SECRET-1",
        worker_token="tok-worker-SECRET-2",
        resources={"max_concurrent_tasks": 2, "gpu_info": {"model": "A100", "vram_gb": 40}, "api_key": "KEY-3"},
        installed_models=[{"name": "sd", "version": "1"}],
        max_tokens=4096,
    )
    status, body = await api.client("GET", f"{prefix}/workers")
    assert status == 200
    [worker] = body["workers"]
    assert worker["worker_id"] == "gpu-1"
    assert worker["supported_tasks"] == ["echo", "draw"]
    assert worker["resources"] == {"max_concurrent_tasks": 2, "gpu_info": {"model": "A100", "vram_gb": 40}}
    assert worker["installed_models"] == [{"name": "sd", "version": "1"}]
    assert worker["max_tokens"] == 4096  # not a secret, only named like one
    assert worker["alive"] is True
    assert worker["current_tasks"] == 0
    assert "token" not in worker
    assert "worker_token" not in worker
    text = str(body)
    for secret in ("tok-worker-SECRET-1", "tok-worker-SECRET-2", "KEY-3"):
        assert secret not in text
    stored = await api.engine.storage.get_worker("gpu-1")
    assert "tok-worker-SECRET-1" not in str(stored)  # not even kept


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_dashboard_counts(make_api, prefix):
    api = await make_api()
    await api.register("w-draw", ["draw"])
    done = [await api.create("/api/v1/jobs/simple") for _ in range(2)]
    waiting = await api.create("/api/v1/jobs/work")
    for job_id in done:
        await api.wait_job(job_id, "finished")
    await api.wait_job(waiting, "waiting_for_worker")
    status, body = await api.client("GET", f"{prefix}/dashboard")
    assert status == 200
    assert body["jobs"] == {"total": 3, "by_status": {"finished": 2, "waiting_for_worker": 1}}
    assert body["workers"] == {"total": 1, "alive": 1}
    assert body["queues"] == {"echo": 1}


async def test_job_history_is_the_timeline_from_history(make_api):
    api = await make_api()
    job_id, task = await api.take()
    status, _ = await api.result(task, "w1", "success")
    assert status == 200
    await api.wait_job(job_id, "finished")
    for prefix in ("/api/v1", "/api"):
        status, body = await api.client("GET", f"{prefix}/jobs/{job_id}/history")
        assert status == 200
        kinds = [entry["kind"] for entry in body["history"]]
        assert kinds[0] == "job_created"
        assert "task_dispatched" in kinds
        assert "task_result" in kinds
        assert kinds[-1] in ("job_finished", "state_left")
        assert [entry["seq"] for entry in body["history"]] == sorted(entry["seq"] for entry in body["history"])
    status, body = await api.client("GET", "/api/v1/jobs/unknown-job/history")
    assert status == 404
    assert "error" in body


async def test_list_jobs_pages_by_cursor_and_finds_by_id_and_time(make_api):
    api = await make_api(storage=MemoryStorage(max_terminal_jobs=2))
    ids = [await api.create("/api/v1/jobs/simple") for _ in range(5)]
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # their live records are forgotten past max_terminal_jobs; history keeps them
        status, body = await api.client("GET", "/api/v1/jobs?status=finished&limit=500")
        if len(body["jobs"]) == 5:
            break
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.02)
    seen, cursor = [], None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, body = await api.client("GET", f"/api/v1/jobs?{query}")
        assert status == 200, body
        seen += [job["id"] for job in body["jobs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # every job, newest first, also those no longer live
    status, body = await api.client("GET", f"/api/v1/jobs?id={ids[0][:8]}")
    assert [job["id"] for job in body["jobs"]] == [ids[0]]
    status, body = await api.client("GET", "/api/v1/jobs?created_after=2999-01-01T00:00:00")
    assert body["jobs"] == []
    status, body = await api.client("GET", "/api/v1/jobs?created_before=2999-01-01T00:00:00&limit=500")
    assert len(body["jobs"]) == 5
    status, body = await api.client("GET", "/api/v1/jobs?cursor=not-a-cursor")
    assert status == 400
    assert body["field"] == "cursor"
    status, body = await api.client("GET", "/api/v1/jobs?created_after=yesterday")
    assert status == 400
    assert body["field"] == "created_after"


# -- timestamps ------------------------------------------------------------------------------------
@given(st.floats(min_value=-1e10, max_value=2.5e11) | st.integers(0, 4_000_000_000).map(lambda s: s + 0.9999995))
@example(1700000000.0000005)
@example(0.0)
def test_iso_writes_what_datetime_writes(timestamp):
    """Seconds remembered and microseconds rounded by hand: exactly datetime's text."""
    assert iso(timestamp) == datetime.fromtimestamp(timestamp, UTC).isoformat()
