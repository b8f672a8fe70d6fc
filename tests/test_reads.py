"""The read model (``engine.reads``) on both live storages (memory, Redis) and both history backends
(SQLite, PostgreSQL): lists and filters, the path as taken, ``state_history`` rebuilt at every line,
fan-out branches, the root cause of an operator's fail, jobs lost with an in-memory engine, graphs kept
by version, workers' running and inbox tasks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from support.blueprints import batch_blueprint, routing_blueprint
from support.engine import FakeWorker, failure, fast_config, success, wait_for, wait_for_status
from support.postgres_server import PostgresServer
from support.redis_server import RedisServer

from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.models import Job
from avtomatika.reads import BranchCounts, JobQuery, Timeline, parse_time
from avtomatika.storage import MemoryStorage, Storage

Backends = tuple[str, str]
MakeEngine = Callable[..., Any]


def flaky() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("flaky")

    @bp.handler_for("fetch", is_start=True)
    async def fetch(context):
        context.actions.dispatch_task("import", {"file": "x.csv"}, transitions={"success": "done"})

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    return bp


BLUEPRINTS = (routing_blueprint, batch_blueprint, flaky)


@pytest.fixture(params=["memory-sqlite", "memory-postgres", "redis-sqlite", "redis-postgres"])
def backends(request: pytest.FixtureRequest) -> Backends:
    storage, history = request.param.split("-")
    return storage, history


@pytest.fixture
async def make_engine(backends: Backends, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeEngine]:
    """Engines on the chosen live storage and history; every call is a new engine on the same data
    (a Redis database, a history database) — with memory storage, on a fresh memory."""
    storage_kind, history_kind = backends
    if history_kind == "postgres":
        postgres: PostgresServer = request.getfixturevalue("postgres")
        history_uri = postgres.create_database()
    else:
        history_uri = f"sqlite:///{tmp_path / 'history.db'}"
    redis: RedisServer | None = None
    if storage_kind == "redis":
        redis = request.getfixturevalue("redis_server")
        client = redis.client()
        await client.flushdb()
        await client.aclose()
    started: list[OrchestratorEngine] = []

    async def make(*blueprints: StateMachineBlueprint) -> OrchestratorEngine:
        storage: Storage
        if redis is not None:
            from avtomatika.storage.redis import RedisStorage

            storage = RedisStorage(url=redis.url)
        else:
            storage = MemoryStorage()
        engine = OrchestratorEngine(storage, fast_config(HISTORY_DATABASE_URI=history_uri))
        for blueprint in blueprints or tuple(b() for b in BLUEPRINTS):
            engine.register_blueprint(blueprint)
        await engine.start(http=False)
        started.append(engine)
        return engine

    try:
        yield make
    finally:
        for engine in started:
            for worker in [w for w in FakeWorker.running if w.engine is engine]:
                await worker.stop()
            if engine.running:  # a test may have stopped it already (to start another on its data)
                await engine.stop()


async def finished(engine: OrchestratorEngine, job: Job) -> Job:
    return await wait_for_status(engine, job.id, "finished")


async def test_two_jobs_one_per_branch_each_record_their_own_edge(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    async with FakeWorker(engine, "shipper", ["echo"]) as worker:
        worker.serve(lambda task: success({"lane": task.params["lane"]}))
        urgent = await engine.create_job("routing", {"priority": "urgent", "items": ["a", "b"]})
        normal = await engine.create_job("routing", {"priority": "normal", "items": ["a"]})
        for job in (urgent, normal):
            await finished(engine, job)
    details = {}
    for job in (urgent, normal):
        detail = await engine.reads.detail(job.id)
        assert detail is not None
        assert detail.timeline is not None
        details[job.id] = detail
    moves = {
        job_id: [(m.source, m.target, m.kind, m.label, m.condition) for m in d.timeline.transitions]  # type: ignore[union-attr]
        for job_id, d in details.items()
    }
    assert moves[urgent.id] == [
        ("received", "triage", "transition", "", None),
        ("triage", "shipped", "dispatch", "success", "context.initial_data.priority == 'urgent'"),
    ]
    assert moves[normal.id] == [
        ("received", "triage", "transition", "", None),
        ("triage", "shipped", "dispatch", "success", None),
    ]
    triage = details[normal.id].timeline.visits_of("triage")[0]  # type: ignore[union-attr]
    assert (triage.handler.data["handler"], triage.handler.data.get("otherwise")) == (  # type: ignore[union-attr]
        "routing_blueprint.<locals>.normal",
        True,
    )
    assert triage.via == {"kind": "transition"}
    shipped = details[normal.id].timeline.visits_of("shipped")[0]  # type: ignore[union-attr]
    assert shipped.via is not None
    assert shipped.via["otherwise"] is True
    # The whole state_history is rebuilt from history alone, and equals the live job's.
    for job in (urgent, normal):
        timeline = details[job.id].timeline
        assert timeline is not None
        assert timeline.state_history == (await engine.get_job(job.id)).state_history  # type: ignore[union-attr]
    assert details[normal.id].timeline.state_history == {"shipped": True, "lane": "slow"}  # type: ignore[union-attr]
    # ...and at every line: after the first step, only "items" was set.
    first_step = next(line for line in details[normal.id].timeline.lines if line.kind == "step_finished")  # type: ignore[union-attr]
    assert details[normal.id].timeline.at(first_step.seq).state_history == {"items": 1}  # type: ignore[union-attr]


async def test_lists_filters_and_pages(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    jobs = [await engine.create_job("flaky", {"n": n}) for n in range(5)]
    other = await engine.create_job("routing", {"priority": "urgent"})
    for job in jobs:
        await wait_for_status(engine, job.id, "waiting_for_worker")
    await wait_for_status(engine, other.id, "waiting_for_worker")
    page = await engine.reads.jobs_page(JobQuery(blueprint="flaky"), 2)
    seen = [row.id for row in page.rows]
    while page.next_cursor is not None:
        page = await engine.reads.jobs_page(JobQuery(blueprint="flaky"), 2, page.next_cursor.encode())
        seen += [row.id for row in page.rows]
    assert seen == [job.id for job in reversed(jobs)], "newest first, every job once"
    by_state = await engine.reads.jobs_page(JobQuery(state="triage"))
    assert [row.id for row in by_state.rows] == [other.id]
    by_prefix = await engine.reads.jobs_page(JobQuery(id_prefix=jobs[2].id[:10]))
    assert [row.id for row in by_prefix.rows] == [jobs[2].id]
    later = await engine.reads.jobs_page(JobQuery(created_after=jobs[3].created_at, blueprint="flaky"))
    assert [row.id for row in later.rows] == [jobs[4].id, jobs[3].id]
    assert all(not row.over for row in by_state.rows)
    assert parse_time("1764243661.5") == 1764243661.5
    assert parse_time("2025-11-27T12:01:01") == parse_time("2025-11-27T12:01:01+00:00")
    assert parse_time("") is None
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


async def test_fan_out_branches_live_and_at_any_line(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    job = await engine.create_job("batch", {"n": 5})
    await wait_for_status(engine, job.id, "waiting_for_parallel_tasks")
    worker = await FakeWorker(engine, "imager", ["echo"]).register()
    first = await worker.take()
    await worker.answer(first, success({"px": 10}))
    second = await worker.take()
    await worker.answer(second, failure("TRANSIENT_ERROR", "disk full"))
    running = await worker.take()  # taken, not answered yet

    async def counted() -> BranchCounts | None:
        counts = (await engine.reads.fan_outs("batch")).get("split")
        return counts if counts is not None and counts.done == 1 and counts.running >= 1 else None

    live = await wait_for(counted, "the fan-out's counts")
    assert (live.total, live.done) == (5, 1)
    detail = await engine.reads.detail(job.id)
    assert detail is not None
    assert detail.timeline is not None
    visit = detail.timeline.visits_of("split")[0]
    assert visit.fan_out
    assert len(visit.branches) == 5
    retried = next(b for b in visit.branches if b.first.task_id == second.id)
    assert retried.first.error == {"code": "TRANSIENT_ERROR", "message": "disk full"}
    assert retried.status in ("retrying", "queued", "running")
    assert next(b for b in visit.branches if b.first.task_id == running.id).status == "running"
    await worker.answer(running, success({"px": 10}))
    worker.serve(lambda task: success({"px": 10}))
    await finished(engine, job)
    done = await engine.reads.detail(job.id)
    assert done is not None
    assert done.timeline is not None
    counts = done.timeline.visits_of("split")[0].counts
    assert (counts.total, counts.done, counts.failed) == (5, 5, 0)
    assert counts.label == "5/5 done"
    assert len(retried.attempts) == 1, "the branch folded as it was when read"
    again = next(b for b in done.timeline.visits_of("split")[0].branches if b.first.task_id == second.id)
    assert [a.status for a in again.attempts] == ["failed", "done"]
    # At the line of the failed answer, the branch had failed and one branch was done.
    failed_line = next(line for line in done.timeline.lines if line.kind == "task_retry")
    then = done.timeline.at(failed_line.seq)
    assert then.state == "split"
    assert then.status == "waiting_for_parallel_tasks"
    assert BranchCounts.of(b.status for b in then.branches).done == 1
    assert then.visit is not None
    assert then.visit.counts.failed == 1
    assert done.timeline.state_history == {"total": 50}
    assert [(m.source, m.target, m.kind, m.label) for m in done.timeline.transitions] == [
        ("split", "collect", "dispatch", "success"),
        ("collect", "published", "transition", ""),
    ]


async def test_failing_a_quarantined_job_keeps_its_root_cause(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    job = await engine.create_job("flaky", {})
    async with FakeWorker(engine, "importer", ["import"]) as worker:
        await worker.run_one(failure("PERMANENT_ERROR", "file is corrupt"))
    await wait_for_status(engine, job.id, "quarantined")
    await engine.fail_job(job.id, actor="operator:olga", reason="not worth fixing")
    detail = await engine.reads.detail(job.id)
    assert detail is not None
    assert (detail.reason, detail.cause) == ("not worth fixing", "PERMANENT_ERROR: file is corrupt")
    assert detail.job.error == "not worth fixing · root cause: PERMANENT_ERROR: file is corrupt"
    row = (await engine.reads.jobs_page(JobQuery(status="failed"))).rows[0]
    assert row.error == detail.job.error, "the list shows the root cause too"


async def test_jobs_held_in_memory_are_lost_with_their_engine(make_engine: MakeEngine, backends: Backends) -> None:
    first = await make_engine()
    held = await first.create_job("flaky", {})
    async with FakeWorker(first, "importer", ["import"]) as worker:
        await worker.run_one(failure("PERMANENT_ERROR", "bad file"))
    await wait_for_status(first, held.id, "quarantined")
    waiting = await first.create_job("flaky", {})
    await wait_for_status(first, waiting.id, "waiting_for_worker")
    await first.stop()
    second = await make_engine()
    lost = await second.reads.jobs_page(JobQuery(status="lost"))
    row = await second.reads.detail(waiting.id)
    assert row is not None
    if backends[0] == "redis":  # live state in Redis outlives the engine: nothing is lost
        assert lost.rows == []
        assert row.job.status == "waiting_for_worker"
        assert not row.from_history
        return
    assert [r.id for r in lost.rows] == [waiting.id, held.id]
    assert lost.rows[1].error is not None
    assert lost.rows[1].error.endswith("stopped while the job was quarantined · root cause: PERMANENT_ERROR: bad file")
    assert lost.rows[0].finished_at is not None, "its duration stops counting"
    assert lost.rows[0].over
    assert row.job.status == "lost"
    assert row.from_history
    assert row.timeline is not None
    assert row.timeline.ending is not None
    assert (row.timeline.ending.kind, row.timeline.ending.data["was"]) == ("job_lost", "waiting_for_worker")
    assert row.ran_s < 60
    # A third start marks nothing again.
    await second.stop()
    third = await make_engine()
    again = await third.reads.detail(waiting.id)
    assert again is not None
    assert again.timeline is not None
    assert [line.kind for line in again.timeline.lines].count("job_lost") == 1


async def test_graphs_are_kept_by_version_with_the_handlers_code(make_engine: MakeEngine) -> None:
    old = flaky()
    engine = await make_engine(old)
    job = await engine.create_job("flaky", {})
    await wait_for_status(engine, job.id, "waiting_for_worker")
    detail = await engine.reads.detail(job.id)
    assert detail is not None
    assert detail.blueprint_version == old.version
    kept = await engine.reads.graph("flaky", old.version)
    assert kept is not None
    assert [n.id for n in kept.nodes] == ["fetch", "done"]
    assert kept.code == old.code_versions()

    changed = StateMachineBlueprint("flaky")

    @changed.handler_for("fetch", is_start=True)
    async def fetch(context):  # the same graph, other code
        context.actions.dispatch_task("import", {"file": "y.csv"}, transitions={"success": "done"})

    @changed.handler_for("done", is_end=True)
    async def done(context):
        pass

    assert changed.version != old.version
    await engine.stop()
    newer = await make_engine(changed)
    fresh = await newer.create_job("flaky", {})
    await wait_for_status(newer, fresh.id, "waiting_for_worker")
    assert await newer.reads.graph("flaky", old.version) is not None, "the old version's graph is still kept"
    assert await newer.reads.graph("flaky", changed.version) is not None
    versions = {job_id: (await newer.reads.detail(job_id)).blueprint_version for job_id in (job.id, fresh.id)}  # type: ignore[union-attr]
    assert versions == {job.id: old.version, fresh.id: changed.version}


async def test_workers_running_apart_from_their_inbox(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    worker = await FakeWorker(engine, "importer", ["import"], max_concurrent_tasks=1).register()
    jobs = [await engine.create_job("flaky", {}) for _ in range(3)]
    for job in jobs:
        await wait_for_status(engine, job.id, "waiting_for_worker")
    taken = await worker.take()

    async def views() -> Any:
        found = {v.record.worker_id: v for v in await engine.reads.workers()}
        view = found.get("importer")
        return view if view is not None and len(view.running) == 1 else None

    view = await wait_for(views, "the worker's running task")
    assert [t.id for t in view.running] == [taken.id]
    assert taken.id not in [t.id for t in view.inbox]
    queues = {q.task_type: q for q in await engine.reads.queues()}
    assert queues["import"].running == 1
    assert queues["import"].queued + 1 == len(jobs)
    assert queues["import"].workers == 1


def test_a_timeline_folds_in_order_whatever_order_lines_arrive_in() -> None:
    from avtomatika.reads import Line

    lines = [
        Line("j", 1, 1.0, "job_created", "a", "pending", None, None, {"initial_data": {"x": 1}}),
        Line("j", 2, 2.0, "step_finished", "a", "running", None, 1.0, {"handler": "a", "changes": {"set": {"y": 2}}}),
        Line(
            "j", 3, 2.0, "state_entered", "b", "running", None, None, {"previous": "a", "via": {"kind": "transition"}}
        ),
    ]
    timeline = Timeline([lines[0]])
    assert timeline.extend([lines[2], lines[1], lines[0]]) == [lines[1], lines[2]]
    assert [line.seq for line in timeline.lines] == [1, 2, 3]
    assert timeline.state_history == {"y": 2}
    assert timeline.at(1).state_history == {}
    assert timeline.at(1).state == "a"
    assert timeline.at(3).visits == {"a": 1, "b": 1}


async def test_a_breakpoints_edits_are_in_the_rebuilt_state_history(make_engine: MakeEngine) -> None:
    engine = await make_engine()
    await engine.set_breakpoint("routing", "triage")
    job = await engine.create_job("routing", {"priority": "urgent", "items": ["a"]})
    await wait_for_status(engine, job.id, "held")
    await engine.continue_job(job.id, state_history={"items": 7, "note": "checked"})
    async with FakeWorker(engine, "shipper", ["echo"]) as worker:
        await worker.run_one(success({}))
    await wait_for_status(engine, job.id, "finished")
    detail = await engine.reads.detail(job.id)
    assert detail is not None
    assert detail.timeline is not None
    assert detail.timeline.state_history == detail.job.state_history == {"items": 7, "note": "checked", "shipped": True}
    continued = next(line for line in detail.timeline.lines if line.kind == "job_continued")
    assert detail.timeline.at(continued.seq).state_history == {"items": 7, "note": "checked"}
    assert detail.timeline.at(continued.seq - 1).state_history == {"items": 1}


async def test_filters_on_initial_data_and_error_text(make_engine: MakeEngine) -> None:
    """Read from history like any list (jobs live storage no longer keeps are found too)."""
    engine = await make_engine()
    acme = [await engine.create_job("flaky", {"customer": "acme", "size": {"n": n}}) for n in range(3)]
    other = await engine.create_job("flaky", {"customer": "globex", "size": {"n": 1}})
    for job in (*acme, other):
        await wait_for_status(engine, job.id, "waiting_for_worker")
    page = await engine.reads.jobs_page(JobQuery(data=(("customer", "acme"),)))
    assert [row.id for row in page.rows] == [job.id for job in reversed(acme)]
    assert page.source == "history"
    nested = await engine.reads.jobs_page(JobQuery(data=(("size.n", "1"),)))
    assert {row.id for row in nested.rows} == {acme[1].id, other.id}
    both = JobQuery(blueprint="flaky", data=(("customer", "acme"), ("size.n", "2")))
    assert await engine.reads.job_ids(both, 10) == [acme[2].id]
    assert await engine.reads.job_ids(JobQuery(blueprint="flaky"), 2) == [j.id for j in (other, acme[2], acme[1])]
    async with FakeWorker(engine, "w1", ["import"]) as worker:
        await worker.run_one(failure("PERMANENT_ERROR", "file 17 is Corrupt"))

    async def corrupt() -> list[str]:
        return [r.status for r in (await engine.reads.jobs_page(JobQuery(error="corrupt"))).rows]

    assert await wait_for(corrupt, "the quarantined job") == ["quarantined"]
    assert await engine.reads.job_ids(JobQuery(error="nothing like it"), 10) == []
