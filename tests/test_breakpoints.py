"""Breakpoints on a live engine: a job held before a state's handler, its context edited, continued
or stepped one state; removing a breakpoint continues the jobs it held. Through the engine's methods
and the HTTP API (the two-engine Redis case with real workers is in test_breakpoints_cluster.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.api import Api, MakeApi
from support.blueprints import API_BLUEPRINTS

from avtomatika import StateMachineBlueprint
from avtomatika.errors import BreakpointNotFound, BreakpointRefused, InvalidOperation, UnknownBlueprint
from avtomatika.events import EventKind
from avtomatika.models import JobStatus
from avtomatika.runtime.breakpoints import step_breakpoint, step_id

stages = StateMachineBlueprint("stages", api_version="v1", api_endpoint="/jobs/stages")


@stages.handler_for("start", is_start=True)
async def stages_start(context):
    context.state_history["start_saw"] = context.initial_data.get("size")
    context.actions.transition_to("resize")


@stages.handler_for("resize")
async def stages_resize(context):
    context.state_history["resize_saw"] = context.initial_data.get("size")
    context.actions.transition_to("publish")


@stages.handler_for("publish")
async def stages_publish(context):
    context.actions.dispatch_task(
        "echo", params={"size": context.initial_data.get("size")}, transitions={"success": "done"}, timeout_seconds=1
    )


@stages.handler_for("done", is_end=True)
async def stages_done(context):
    pass


async def _api(make_api: MakeApi, **settings: object) -> Api:
    return await make_api(stages, *API_BLUEPRINTS, **settings)


async def test_a_blueprint_breakpoint_holds_new_jobs_before_the_handler(make_api: MakeApi) -> None:
    api = await _api(make_api)
    before = await api.create("/api/v1/jobs/approval")  # another blueprint: never held
    status, breakpoint = await api.client(
        "POST", "/api/v1/breakpoints", json={"blueprint": "stages", "state": "resize"}
    )
    assert status == 201, breakpoint
    assert (breakpoint["blueprint"], breakpoint["state"], breakpoint["job_id"], breakpoint["step"]) == (
        "stages",
        "resize",
        None,
        False,
    )
    job_id = await api.create("/api/v1/jobs/stages", {"size": 10})
    view = await api.wait_job(job_id, "held")
    assert view["current_state"] == "resize"
    assert view["state_history"] == {"start_saw": 10}  # resize's handler has not run
    assert (await api.job(before))["status"] == "waiting_for_human"
    assert await api.engine.storage.next_timer_at() is None  # nothing times a held job out
    _, counts = await api.client("GET", "/api/v1/dashboard")
    assert counts["jobs"]["by_status"]["held"] == 1


async def test_a_job_created_before_a_blueprint_breakpoint_is_not_held(make_api: MakeApi) -> None:
    api = await _api(make_api)
    await api.register("w1")
    job = await api.engine.create_job("stages", {"size": 1})
    await api.engine.set_breakpoint("stages", "publish")
    assert job.created_at < (await api.engine.breakpoints())[0].created_at
    task = await api.next_task("w1")
    assert task["job_id"] == job.id  # went through publish


async def test_continue_with_edited_data_runs_the_handler_on_the_edit(make_api: MakeApi) -> None:
    api = await _api(make_api)
    await api.register("w1")
    await api.engine.set_breakpoint("stages", "resize")
    job_id = await api.create("/api/v1/jobs/stages", {"size": 10})
    await api.wait_job(job_id, "held")
    status, body = await api.client(
        "POST",
        f"/api/v1/jobs/{job_id}/continue",
        json={"initial_data": {"size": 42}, "state_history": {"start_saw": 10, "note": "edited"}},
    )
    assert (status, body["status"], body["current_state"]) == (200, "running", "resize")
    task = await api.next_task("w1")
    assert task["params"] == {"size": 42}
    await api.result(task, "w1")
    view = await api.wait_job(job_id, "finished")
    assert view["state_history"] == {"start_saw": 10, "note": "edited", "resize_saw": 42}
    history = await api.engine.job_history(job_id)
    continued = [e for e in history if e.kind == EventKind.JOB_CONTINUED]
    assert len(continued) == 1
    assert continued[0].data["edits"] == {
        "initial_data": {"set": {"size": 42}},
        "state_history": {"set": {"note": "edited"}},
    }
    assert continued[0].data["actor"] == "client:anonymous"
    held = [e for e in history if e.kind == EventKind.JOB_HELD]
    assert [(e.state, e.status) for e in held] == [("resize", "held")]


async def test_step_holds_the_job_at_each_next_state(make_api: MakeApi) -> None:
    api = await _api(make_api)
    await api.register("w1")
    job = await api.engine.create_job("stages", {"size": 3})
    await api.engine.set_breakpoint(None, "*", job_id=job.id)  # hold it at whatever state it is in next
    # Created before the breakpoint: a job's own breakpoint holds it whenever it was created.
    await api.wait_job(job.id, lambda v: v["status"] == "held" and v["current_state"] in ("start", "resize"))
    state = (await api.job(job.id))["current_state"]
    assert await api.engine.breakpoints() == []  # a step's breakpoint is used up once it holds
    await api.engine.continue_job(job.id)
    task = await api.next_task("w1")
    await api.result(task, "w1")
    await api.wait_job(job.id, "finished")
    assert state in ("start", "resize")

    second = await api.engine.create_job("stages", {"size": 4})
    breakpoint = await api.engine.set_breakpoint("stages", "start", job_id=second.id)
    await api.wait_job(second.id, "held")
    await api.engine.remove_breakpoint(breakpoint.id)
    await api.result(await api.next_task("w1"), "w1")
    await api.wait_job(second.id, "finished")
    # Steps: held at resize, then at publish, then continued to the end.
    third = await api.engine.create_job("stages", {"size": 5})
    await api.engine.set_breakpoint("stages", "start", job_id=third.id)
    await api.wait_job(third.id, "held")
    visited = []
    for _ in range(2):
        status, body = await api.client("POST", f"/api/v1/jobs/{third.id}/continue", json={"step": True})
        assert status == 200, body
        left = body["current_state"]
        view = await api.wait_job(third.id, lambda v, left=left: v["status"] == "held" and v["current_state"] != left)
        visited.append(view["current_state"])
    assert visited == ["resize", "publish"]
    assert [bp.id for bp in await api.engine.breakpoints() if bp.job_id == third.id and bp.once] == []
    status, body = await api.client("POST", f"/api/v1/jobs/{third.id}/continue")
    assert (status, body["status"]) == (200, "running")
    await api.result(await api.next_task("w1"), "w1")
    await api.wait_job(third.id, "finished")


async def test_a_job_held_at_its_breakpoint_is_not_held_again_at_the_same_visit(make_api: MakeApi) -> None:
    api = await _api(make_api)
    await api.register("w1")
    await api.engine.set_breakpoint("stages", "publish")
    job = await api.engine.create_job("stages", {"size": 1})
    await api.wait_job(job.id, "held")
    await api.engine.continue_job(job.id)
    task = await api.next_task("w1")  # the breakpoint is still set; publish's handler ran
    assert task["job_id"] == job.id
    await api.result(task, "w1")
    await api.wait_job(job.id, "finished")


async def test_removing_a_breakpoint_continues_every_job_it_holds(make_api: MakeApi) -> None:
    api = await _api(make_api)
    breakpoint = await api.engine.set_breakpoint("stages", "publish")
    other = await api.engine.set_breakpoint("simple", "done")
    jobs = [await api.engine.create_job("stages", {"size": n}) for n in range(3)]
    kept = await api.engine.create_job("simple", {})
    for job in [*jobs, kept]:
        await api.wait_job(job.id, "held")
    status, body = await api.client("DELETE", f"/api/v1/breakpoints/{breakpoint.id}")
    assert status == 200, body
    assert sorted(body["continued"]) == sorted(j.id for j in jobs)
    for job in jobs:
        await api.wait_job(job.id, "waiting_for_worker")
    assert (await api.job(kept.id))["status"] == "held"  # held by another breakpoint
    assert [bp.id for bp in await api.engine.breakpoints()] == [other.id]
    status, body = await api.client("DELETE", f"/api/v1/breakpoints/{breakpoint.id}")
    assert status == 404, body


async def test_jobs_of_a_breakpoint_removed_by_a_process_that_died_are_continued(
    make_api: MakeApi,
) -> None:
    """The removal alone (its remover died before continuing the jobs): its timer continues them; an
    engine starting removes a step's breakpoint left behind by a job that ended."""
    api = await _api(make_api)
    breakpoint = await api.engine.set_breakpoint("stages", "publish")
    job = await api.engine.create_job("stages", {"size": 1})
    await api.wait_job(job.id, "held")
    await api.engine.storage.remove_breakpoint(breakpoint.id)  # the removal, without what follows it
    await api.wait_job(job.id, "waiting_for_worker")
    stepped = await api.engine.create_job("simple", {})
    await api.wait_job(stepped.id, "finished")
    await api.engine.storage.set_breakpoint(step_breakpoint(stepped))  # a step to an end, not removed
    await make_api(stages, storage=api.engine.storage)
    assert await api.engine.breakpoints() == []


async def test_a_jobs_own_breakpoint_goes_once_the_job_finished_and_stays_for_a_retry(
    make_api: MakeApi,
) -> None:
    """Swept (by a removal, or an engine starting): a finished job's breakpoints serve nothing; a failed
    or cancelled job's may serve a retry."""
    api = await _api(make_api)
    finished = await api.engine.create_job("simple", {})
    await api.wait_job(finished.id, "finished")
    cancelled = await api.engine.create_job("stages", {"size": 1})
    await api.wait_job(cancelled.id, "waiting_for_worker")
    await api.engine.cancel_job(cancelled.id)
    gone = await api.engine.set_breakpoint(None, "start", job_id=finished.id)
    kept = await api.engine.set_breakpoint(None, "resize", job_id=cancelled.id)
    other = await api.engine.set_breakpoint("stages", "publish")
    await api.engine.remove_breakpoint(other.id)
    assert [bp.id for bp in await api.engine.breakpoints()] == [kept.id]
    assert gone.id not in {bp.id for bp in await api.engine.breakpoints()}
    await api.engine.retry_job(cancelled.id, from_state="start")
    held = await api.wait_job(cancelled.id, "held")
    assert held["current_state"] == "resize"


async def test_a_held_job_can_be_cancelled_and_a_step_breakpoint_goes_with_a_failed_continue(
    make_api: MakeApi,
) -> None:
    api = await _api(make_api)
    await api.engine.set_breakpoint("stages", "resize")
    job = await api.engine.create_job("stages", {})
    await api.wait_job(job.id, "held")
    await api.engine.cancel_job(job.id)
    assert (await api.job(job.id))["status"] == "cancelled"
    with pytest.raises(InvalidOperation, match="only held jobs can be continued, not cancelled"):
        await api.engine.continue_job(job.id, step=True)
    assert step_id(job.id) not in {bp.id for bp in await api.engine.breakpoints()}


async def test_refused_breakpoints_name_what_is_wrong(make_api: MakeApi) -> None:
    api = await _api(make_api)
    cases = [
        ({"blueprint": "stages", "state": "nope"}, 400, "state", "blueprint 'stages' has no state 'nope'"),
        ({"blueprint": "stages", "state": "*"}, 400, "state", "'*' (the next state) holds one job"),
        ({"state": "start"}, 400, "blueprint", "name a blueprint, or a job"),
        ({"blueprint": "missing", "state": "start"}, 404, None, "Unknown blueprint 'missing'"),
        ({"job_id": "no-such-job", "state": "start"}, 404, None, "Job 'no-such-job' not found"),
        ({"blueprint": "stages"}, 400, "state", "Field required"),
        ({"blueprint": "stages", "state": "start", "extra": 1}, 400, "extra", "Extra inputs"),
    ]
    for body, status, field, message in cases:
        got, answer = await api.client("POST", "/api/v1/breakpoints", json=body)
        assert got == status, (body, answer)
        assert message in answer["error"], (body, answer)
        assert answer.get("field") == field, (body, answer)
    job = await api.engine.create_job("simple", {})
    got, answer = await api.client(
        "POST", "/api/v1/breakpoints", json={"blueprint": "stages", "job_id": job.id, "state": "start"}
    )
    assert (got, answer.get("field")) == (400, "blueprint")
    with pytest.raises(BreakpointRefused):
        await api.engine.set_breakpoint("stages", "*")
    with pytest.raises(UnknownBlueprint):
        await api.engine.set_breakpoint("missing", "start")
    with pytest.raises(BreakpointNotFound):
        await api.engine.remove_breakpoint("nope")
    got, answer = await api.client("POST", f"/api/v1/jobs/{job.id}/continue", json={"initial_data": [1]})
    assert (got, answer.get("field")) == (400, "initial_data"), answer
    got, answer = await api.client("POST", f"/api/v1/jobs/{job.id}/continue")
    assert got == 409, answer
    assert "only held jobs can be continued" in answer["error"]


async def test_an_edit_is_checked_by_the_blueprint_input_model(make_api: MakeApi) -> None:
    api = await _api(make_api)
    await api.engine.set_breakpoint("typed", "start")
    job_id = await api.create("/api/v1/jobs/typed", {"item": "book", "quantity": 1})
    await api.wait_job(job_id, "held")
    got, answer = await api.client(
        "POST", f"/api/v1/jobs/{job_id}/continue", json={"initial_data": {"item": "book", "quantity": 0}}
    )
    assert (got, answer.get("field")) == (400, "quantity"), answer
    assert (await api.job(job_id))["status"] == "held"
    got, answer = await api.client(
        "POST", f"/api/v1/jobs/{job_id}/continue", json={"initial_data": {"item": "pen", "quantity": 2}}
    )
    assert got == 200, answer
    view = await api.wait_job(job_id, "finished")
    assert view["initial_data"] == {"item": "pen", "quantity": 2}


async def test_a_client_with_a_token_works_with_breakpoints_on_its_own_jobs(make_api: MakeApi, tmp_path: Path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text('[alice]\ntoken = "alice-token"\n\n[bob]\ntoken = "bob-token"\n')
    api = await _api(make_api, CLIENTS_CONFIG_PATH=clients)
    mine = await api.create("/api/v1/jobs/approval", token="alice-token")
    await api.wait_job(mine, "waiting_for_human", token="alice-token")
    wide = {"blueprint": "stages", "state": "start"}
    got, answer = await api.client("POST", "/api/v1/breakpoints", json=wide, token="alice-token")
    assert (got, answer.get("field")) == (403, "job_id"), answer
    operator_breakpoint = await api.engine.set_breakpoint("simple", "done")
    got, answer = await api.client(
        "POST", "/api/v1/breakpoints", json={"job_id": mine, "state": "shipped"}, token="alice-token"
    )
    assert got == 201, answer
    assert answer["set_by"] == "client:alice"
    got, listed = await api.client("GET", "/api/v1/breakpoints", token="alice-token")
    assert [bp["id"] for bp in listed["breakpoints"]] == [answer["id"]]  # not the operator's
    got, listed = await api.client("GET", "/api/v1/breakpoints", token="bob-token")
    assert listed["breakpoints"] == []
    for token, breakpoint_id in (("alice-token", operator_breakpoint.id), ("bob-token", answer["id"])):
        got, refused = await api.client("DELETE", f"/api/v1/breakpoints/{breakpoint_id}", token=token)
        assert got == 404, refused
    await api.engine.decide(mine, "approve")
    await api.wait_job(mine, "held", token="alice-token")
    got, refused = await api.client("POST", f"/api/v1/jobs/{mine}/continue", token="bob-token")
    assert got == 404, refused
    got, refused = await api.client(
        "POST", "/api/v1/breakpoints", json={"job_id": mine, "state": "dropped"}, token="bob-token"
    )
    assert got == 404, refused
    got, done = await api.client("POST", f"/api/v1/jobs/{mine}/continue", json={"step": True}, token="alice-token")
    assert (got, done["status"]) == (200, "running"), done
    await api.wait_job(mine, "finished", token="alice-token")  # shipped is its end: no next state to hold at
    kept = {bp.id for bp in await api.engine.breakpoints()}
    assert kept == {operator_breakpoint.id, answer["id"]}  # the step's is gone


async def test_breakpoint_routes_are_in_the_openapi_document(make_api: MakeApi) -> None:
    api = await _api(make_api)
    _, document = await api.client("GET", "/_public/openapi.json")
    paths = document["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/breakpoints"])
    assert "delete" in paths["/api/v1/breakpoints/{breakpoint_id}"]
    assert "post" in paths["/api/v1/jobs/{job_id}/continue"]
    assert "held" in document["components"]["schemas"]["JobStatus"]["enum"]


def test_a_held_status_is_neither_runnable_nor_terminal() -> None:
    from avtomatika.models import RUNNABLE_STATUSES, TERMINAL_STATUSES

    assert JobStatus.HELD not in RUNNABLE_STATUSES | TERMINAL_STATUSES
