"""Rerun from any state with edited input: a new job at a chosen state of an ended one, with the data
it had there (from history), edited; each job's history names the other. Through the engine, the HTTP
API and in bulk (the studio's forms are tested in test_studio_rerun.py)."""

from __future__ import annotations

import asyncio

import pytest
from support.api import Api

from avtomatika import StateMachineBlueprint
from avtomatika.errors import InvalidOperation
from avtomatika.models import BulkKind, BulkStatus
from avtomatika.reads.timeline import Timeline
from avtomatika.runtime.bulk import rerun_id
from avtomatika.runtime.rerun import rerun_origin

pipeline = StateMachineBlueprint("pipeline", api_version="v1", api_endpoint="/jobs/pipeline")


@pipeline.handler_for("fetch", is_start=True)
async def pipeline_fetch(context):
    context.state_history["fetched"] = context.initial_data.get("size")
    context.state_history["fetches"] = context.state_history.get("fetches", 0) + 1
    context.actions.transition_to("resize")


@pipeline.handler_for("resize")
async def pipeline_resize(context):
    size = context.initial_data.get("size")
    if size == "bad":
        raise ValueError("size must be a number")
    context.state_history["resized"] = size * 2
    context.state_history["resize_saw_fetched"] = context.state_history.get("fetched")
    context.actions.transition_to("hold" if context.initial_data.get("hold") else "publish")


@pipeline.handler_for("hold")
async def pipeline_hold(context):
    context.actions.await_human_approval("none", "hold", {"go": "publish"})


@pipeline.handler_for("publish", is_end=True)
async def pipeline_publish(context):
    pass


async def _finished(api: Api, data: dict) -> str:
    job_id = await api.create("/api/v1/jobs/pipeline", data)
    await api.wait_job(job_id, "finished")
    return job_id


async def _rerun(api: Api, job_id: str, body: dict | None = None, **kwargs) -> tuple[int, dict]:
    return await api.client("POST", f"/api/v1/jobs/{job_id}/rerun", json=body or {}, **kwargs)


async def test_a_finished_job_reruns_from_its_second_state_with_an_edited_field(make_api) -> None:
    api = await make_api(pipeline)
    origin = await _finished(api, {"size": 3, "tag": "a"})
    status, body = await _rerun(api, origin, {"state": "resize", "initial_data": {"size": 5, "tag": "a"}})
    assert status == 202, body
    assert (body["current_state"], body["rerun_of"]) == ("resize", origin)
    view = await api.wait_job(body["job_id"], "finished")
    # fetch did not run again: its state_history is the origin's as it entered resize, resize saw the edit
    assert view["state_history"] == {"fetched": 3, "fetches": 1, "resized": 10, "resize_saw_fetched": 3}

    new = await api.engine.reads.detail(body["job_id"])
    assert new.rerun_of == {
        "job_id": origin,
        "state": "resize",
        "visit": 1,
        "edits": {"initial_data": {"set": {"size": 5}, "was": {"size": 3}}},
    }
    assert [line.state for line in new.timeline.lines if line.kind == "state_entered"] == ["publish"]
    old = await api.engine.reads.detail(origin)
    (link,) = old.reruns
    assert (link["rerun_job_id"], link["state"], link["actor"]) == (body["job_id"], "resize", "client:anonymous")
    assert old.job.status == "finished"  # the origin is left as it is


async def test_a_rerun_without_edits_takes_the_data_as_it_was_there(make_api) -> None:
    api = await make_api(pipeline)
    origin = await _finished(api, {"size": 2})
    job = await api.engine.rerun(origin, "publish")
    assert job.state_history == {"fetched": 2, "fetches": 1, "resized": 4, "resize_saw_fetched": 2}
    assert job.initial_data == {"size": 2}
    await api.wait_job(job.id, "finished")
    detail = await api.engine.reads.detail(job.id)
    assert detail.rerun_of["edits"] == {}
    assert detail.timeline.state_history == job.state_history  # rebuilt from history alone

    from_start = await api.engine.rerun(origin)  # the start state by default, with nothing of before
    assert (from_start.state, from_start.state_history) == ("fetch", {})


async def test_a_failed_job_reruns_with_its_state_history_edited(make_api) -> None:
    api = await make_api(pipeline)
    job_id = await api.create("/api/v1/jobs/pipeline", {"size": "bad"})
    await api.wait_job(job_id, lambda v: v["status"] in ("failed", "quarantined"), timeout_s=10)
    status, body = await _rerun(
        api, job_id, {"state": "resize", "initial_data": {"size": 4}, "state_history": {"fetched": 99}}
    )
    assert status == 202, body
    view = await api.wait_job(body["job_id"], "finished")
    assert view["state_history"] == {"fetched": 99, "resized": 8, "resize_saw_fetched": 99}
    edits = (await api.engine.reads.detail(body["job_id"])).rerun_of["edits"]
    assert edits == {
        "initial_data": {"set": {"size": 4}, "was": {"size": "bad"}},
        "state_history": {"set": {"fetched": 99}, "unset": ["fetches"], "was": {"fetched": "bad", "fetches": 1}},
    }


async def test_refused_reruns_say_why(make_api) -> None:
    api = await make_api(pipeline)
    waiting = await api.create("/api/v1/jobs/pipeline", {"size": 1, "hold": True})
    await api.wait_job(waiting, "waiting_for_human")
    status, body = await _rerun(api, waiting, {"state": "resize"})
    assert status == 409, body
    assert "waiting_for_human" in body["error"]

    done = await _finished(api, {"size": 1})
    status, body = await _rerun(api, done, {"state": "nowhere"})
    assert status == 409, body
    assert "no state 'nowhere'" in body["error"]
    status, body = await _rerun(api, done, {"state": "resize", "visit": 2})
    assert status == 409, body
    assert "entered 'resize' 1 time; there is no visit 2" in body["error"]
    status, body = await _rerun(api, "no-such-job")
    assert status == 404, body
    status, body = await _rerun(api, done, {"initial_data": [1]})
    assert status == 400, body
    assert body["field"] == "initial_data"
    status, body = await _rerun(api, done, {"stat": "resize"})
    assert status == 400, body
    assert body["field"] == "stat"


async def test_a_state_never_entered_takes_the_data_as_the_job_ended(make_api) -> None:
    api = await make_api(pipeline)
    origin = await _finished(api, {"size": 1})
    job = await api.engine.rerun(origin, "hold")
    assert job.state == "hold"
    assert job.state_history == {"fetched": 1, "fetches": 1, "resized": 2, "resize_saw_fetched": 1}
    detail = await api.engine.reads.detail(job.id)
    assert detail.rerun_of["visit"] is None


async def test_a_client_reruns_only_its_own_jobs_and_each_rerun_is_an_attempt(make_api, tmp_path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(
        '[acme]\ntoken = "acme-token"\nmonthly_attempts = 2\n[other]\ntoken = "other-token"\n', encoding="utf-8"
    )
    api = await make_api(pipeline, CLIENTS_CONFIG_PATH=str(clients))
    mine = await api.create("/api/v1/jobs/pipeline", {"size": 1}, token="acme-token")
    await api.wait_job(mine, "finished", token="acme-token")
    status, body = await _rerun(api, mine, token="other-token")
    assert status == 404, body
    status, body = await _rerun(api, mine, token="acme-token")
    assert status == 202, body
    assert (await api.job(body["job_id"], token="acme-token"))["status"] in ("running", "pending", "finished")
    status, body = await _rerun(api, mine, token="acme-token")
    assert status == 429, body  # two attempts: the job and its rerun


async def test_a_bulk_rerun_starts_each_job_once(make_api) -> None:
    api = await make_api(pipeline)
    origins = [await _finished(api, {"size": n}) for n in range(3)]
    action = await api.engine.bulk.start(BulkKind.RERUN, origins, rate_per_s=100, actor="olga", state="resize")
    for _ in range(500):
        action = await api.engine.bulk.get(action.id)
        if action.status != BulkStatus.RUNNING:
            break
        await asyncio.sleep(0.01)
    assert (action.status, action.done, action.skipped) == (BulkStatus.FINISHED, 3, 0)
    for n, origin in enumerate(origins):
        new_id = rerun_id(action.id, origin)
        view = await api.wait_job(new_id, "finished")
        assert view["state_history"]["resized"] == n * 2
        detail = await api.engine.reads.detail(new_id)
        assert detail.rerun_of["job_id"] == origin
        created = detail.timeline.lines[0]
        assert (created.data["actor"], created.data["bulk_id"]) == ("olga", action.id)
    # An engine carrying on a round another one did (it died before recording it) starts none twice.
    with pytest.raises(InvalidOperation, match="rerun already"):
        await api.engine.bulk._rerun(action, origins[0])


async def test_a_bulk_rerun_is_for_operators(make_api, tmp_path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text('[acme]\ntoken = "acme-token"\n', encoding="utf-8")
    api = await make_api(pipeline, CLIENTS_CONFIG_PATH=str(clients))
    mine = await api.create("/api/v1/jobs/pipeline", {"size": 1}, token="acme-token")
    status, body = await api.client(
        "POST", "/api/v1/bulk", json={"action": "rerun", "job_ids": [mine]}, token="acme-token"
    )
    assert status == 403, body
    assert body["field"] == "action"


def test_without_history_only_the_start_state_can_be_rerun_from() -> None:
    from avtomatika.models import Job

    job = Job(id="j1", blueprint="pipeline", state="publish", status="finished", initial_data={"size": 1})
    common = {"blueprint": "pipeline", "client": None, "status": "finished", "start_state": "fetch", "live": job}
    origin = rerun_origin("j1", state="fetch", timeline=None, **common)
    assert (origin.initial_data, origin.state_history, origin.visit) == ({"size": 1}, {}, 1)
    with pytest.raises(InvalidOperation, match="needs the job's history"):
        rerun_origin("j1", state="resize", timeline=Timeline(), **common)
