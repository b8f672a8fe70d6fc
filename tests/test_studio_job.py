"""The studio's pages as issue 20 wants them, through aiohttp_client and their JSON twins: the job
page's path, timeline, fan-out and version; time travel and a state's visits; honest blueprint
counts; workers' running tasks apart from their inbox; a sign-in page that tells nothing; a start
form that shows what a blueprint expects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from support.engine import FakeWorker, failure, fast_config, started_engine, success, wait_for, wait_for_status
from support.studio import csrf_of, studio_app, studio_engine

from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.graph import extract
from avtomatika.storage import MemoryStorage


def route() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("route")

    @bp.handler_for("start", is_start=True).when("context.initial_data.fast == True")
    async def fast(context):
        context.actions.transition_to("done")

    @bp.handler_for("start")
    async def slow(context):
        context.state_history["slow"] = True
        context.actions.transition_to("done")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    return bp


def fan() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("fan")

    @bp.handler_for("split", is_start=True)
    async def split(context):
        for n in range(3):
            context.actions.dispatch_task("echo", {"n": n}, transitions={"success": "join"})

    @bp.aggregator_for("join")
    async def join(context):
        context.actions.transition_to("end")

    @bp.handler_for("end", is_end=True)
    async def end(context):
        pass

    return bp


async def json_of(client: Any, path: str) -> Any:
    response = await client.get(path, headers={"Accept": "application/json"})
    assert response.status == 200, await response.text()
    return await response.json()


async def test_the_job_page_draws_exactly_the_edge_taken(aiohttp_client) -> None:
    async with started_engine(route()) as engine:
        client = await aiohttp_client(studio_app(engine))
        jobs = {
            "fast": await engine.create_job("route", {"fast": True}),
            "slow": await engine.create_job("route", {"fast": False}),
        }
        for job in jobs.values():
            await wait_for_status(engine, job.id, "finished")
        edges = {("when" if e.condition else "otherwise"): e.dom_id for e in extract(route()).edges}
        fast, slow = [await json_of(client, f"/studio/jobs/{jobs[k].id}") for k in ("fast", "slow")]
        assert set(fast["taken_edges"]) - {"entry-route-edge"} == {edges["when"]}
        assert set(slow["taken_edges"]) - {"entry-route-edge"} == {edges["otherwise"]}
        assert [(m["from"], m["to"], m["condition"]) for m in fast["path"]] == [
            ("start", "done", "context.initial_data.fast == True")
        ]
        assert slow["path"][0]["condition"] is None
        page = await (await client.get(f"/studio/jobs/{jobs['slow'].id}")).text()
        assert f'data-edge="{edges["otherwise"]}" data-class="taken"' in page
        assert f'data-edge="{edges["when"]}" data-class=""' in page
        assert "[otherwise]" in page, "the timeline names the default handler"
        assert 'data-graph-mode="path"' in page


async def test_time_travel_and_a_states_visits(aiohttp_client) -> None:
    async with started_engine(route()) as engine:
        client = await aiohttp_client(studio_app(engine))
        job = await engine.create_job("route", {"fast": False})
        await wait_for_status(engine, job.id, "finished")
        twin = await json_of(client, f"/studio/jobs/{job.id}")
        step = next(line["seq"] for line in twin["timeline"] if line["kind"] == "step_finished")
        moment = await json_of(client, f"/studio/jobs/{job.id}/at?seq={step}")
        assert (moment["state"], moment["status"], moment["state_history"]) == ("start", "running", {"slow": True})
        assert moment["path"] == []
        last = await json_of(client, f"/studio/jobs/{job.id}/at?seq=999")
        assert (last["state"], last["status"], last["seq"]) == ("done", "finished", twin["timeline"][-1]["seq"])
        fragment = await (await client.get(f"/studio/jobs/{job.id}/at?seq=1", headers={"HX-Request": "true"})).text()
        assert 'data-moment="1"' in fragment
        assert 'hx-swap-oob="true"' in fragment, "the graph's marks then come with it"
        assert (await client.get(f"/studio/jobs/{job.id}/at?seq=x")).status == 400
        visits = await json_of(client, f"/studio/jobs/{job.id}/states/start")
        assert [v["handler"] for v in visits["visits"]] == ["route.<locals>.slow"]
        assert visits["visits"][0]["changes"] == {"set": {"slow": True}}
        html = await (await client.get(f"/studio/jobs/{job.id}/states/start")).text()
        assert "default (no <code>.when()</code> held)" in html


async def test_the_fan_out_panel_and_the_workers_page(aiohttp_client) -> None:
    async with started_engine(fan()) as engine:
        client = await aiohttp_client(studio_app(engine))
        job = await engine.create_job("fan", {})
        await wait_for_status(engine, job.id, "waiting_for_parallel_tasks")
        worker = await FakeWorker(engine, "w-fan", ["echo"], max_concurrent_tasks=3).register()
        tasks = [await worker.take() for _ in range(3)]
        await worker.answer(tasks[0], success({"n": 0}))
        await worker.answer(tasks[1], failure("TRANSIENT_ERROR", "disk full"))

        async def twin() -> Any:
            found = await json_of(client, f"/studio/jobs/{job.id}")
            fan_out = found["fan_out"]
            return found if fan_out and fan_out["done"] == 1 and fan_out["failed"] + fan_out["queued"] >= 1 else None

        page = await wait_for(twin, "the fan-out's counts")
        assert page["fan_out"]["total"] == 3
        assert len(page["branches"]) == 3
        html = await (await client.get(f"/studio/jobs/{job.id}")).text()
        assert 'id="branches"' in html
        assert "1/3 done" in html
        # The worker runs one task: the answered branches are not its current tasks any more.
        workers = await json_of(client, "/studio/workers")
        mine = next(w for w in workers["workers"] if w["worker_id"] == "w-fan")
        assert [t["task_id"] for t in mine["running"]] == [tasks[2].id]
        # The failed branch's next attempt goes to this worker's inbox (once its backoff is over).
        assert all(t["params"] == {"n": 1} and t["status"] == "queued" for t in mine["inbox"])
        assert {q["task_type"] for q in workers["queues"]} == {"echo"}
        blueprints = await json_of(client, "/studio/blueprints")
        counts = next(b for b in blueprints["blueprints"] if b["name"] == "fan")
        assert counts["fan_outs"]["split"]["total"] == 3
        assert counts["in_flight"] == {"split": {"waiting_for_parallel_tasks": 1}}


async def test_a_job_page_draws_the_graph_it_ran_on(aiohttp_client, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'history.db'}"
    first = OrchestratorEngine(MemoryStorage(), fast_config(HISTORY_DATABASE_URI=uri))
    first.register_blueprint(route())
    await first.start(http=False)
    job = await first.create_job("route", {"fast": True})
    await wait_for_status(first, job.id, "finished")
    await first.stop()

    today = StateMachineBlueprint("route")

    @today.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to("review")

    @today.handler_for("review")
    async def review(context):
        context.actions.transition_to("done")

    @today.handler_for("done", is_end=True)
    async def done(context):
        pass

    engine = OrchestratorEngine(MemoryStorage(), fast_config(HISTORY_DATABASE_URI=uri))
    engine.register_blueprint(today)
    await engine.start(http=False)
    try:
        client = await aiohttp_client(studio_app(engine))
        twin = await json_of(client, f"/studio/jobs/{job.id}")
        version = twin["version"]
        assert version["ran_on"] == route().version
        assert version["today"] == today.version
        assert version["added_states"] == ["review"]
        assert version["changed_states"] == ["start"]
        assert any("start → done" in edge and "when" in edge for edge in version["removed_edges"])
        page = await (await client.get(f"/studio/jobs/{job.id}")).text()
        assert "data-version-diff" in page
        assert 'id="node-review"' not in page, "the graph drawn is the one the job ran on"
        assert 'data-class="visited active status-finished tone-finished"' in page
        marks = re.search(r'<i data-node="node-start" data-state="start" data-class="([^"]*)"', page)
        assert marks is not None
        assert "changed" in marks.group(1).split(), "its handlers' code changed since"
    finally:
        await engine.stop()


async def test_a_release_with_params_shows_their_diff(aiohttp_client) -> None:
    async with started_engine(fan()) as engine:
        client = await aiohttp_client(studio_app(engine))
        job = await engine.create_job("fan", {})
        await wait_for_status(engine, job.id, "waiting_for_parallel_tasks")
        async with FakeWorker(engine, "w-release", ["echo"]) as worker:
            await worker.run_one(failure("PERMANENT_ERROR", "bad n"))
            await wait_for_status(engine, job.id, "quarantined")
            await engine.release_job(job.id, actor="operator:olga", params={"n": 10, "retry": True})
        page = await (await client.get(f"/studio/jobs/{job.id}")).text()
        released = page.split('data-kind="job_released"', 1)[1].split('class="raw"', 1)[0]
        assert "by operator:olga" in released
        diff = released.split("data-release-diff", 1)[1]
        assert "~ n</code>" in diff, "the held task's params against those it was sent again with"
        assert "+ retry</code>" in diff
        twin = await json_of(client, f"/studio/jobs/{job.id}")
        counts = twin["fan_out"]
        assert counts["total"] == 3
        assert counts["held"] == 0, "released: the held branches are sent again"


async def test_the_sign_in_page_tells_nothing_about_the_engine(aiohttp_client) -> None:
    async with studio_engine(STUDIO_TOKEN="op-secret") as engine:
        await engine.create_job("studio_echo", {})
        client = await aiohttp_client(studio_app(engine))
        page = await (await client.get("/studio/login")).text()
        assert "data-quarantined" not in page
        assert "data-workers-alive" not in page
        assert "data-access" not in page, "no 'signed in' pill before signing in"
        token = await csrf_of(client, "/studio/login")
        await client.post("/studio/login", data={"csrf_token": token, "token": "op-secret", "name": "olga"})
        after = await (await client.get("/studio/jobs")).text()
        assert "data-quarantined" in after
        assert "signed in with a token" in after


async def test_the_start_form_shows_what_the_blueprint_expects(aiohttp_client) -> None:
    declared = StateMachineBlueprint("declared", input_example={"file": "customers.csv"})

    @declared.handler_for("go", is_start=True, is_end=True)
    async def go(context):
        pass

    async with started_engine(route(), declared) as engine:
        client = await aiohttp_client(studio_app(engine))
        derived = await json_of(client, "/studio/blueprints/route")
        assert derived["form"]["example"] == {"fast": True}
        assert derived["form"]["hint"].startswith("The keys its handlers read from initial_data (fast)")
        page = await (await client.get("/studio/blueprints/declared")).text()
        assert "customers.csv" in page
        assert "The blueprint&#39;s example input." in page
