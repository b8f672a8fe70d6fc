"""Nothing lost, nothing counted twice: an engine killed (SIGKILL) right after each of its writes.

The write boundaries are enumerated from the engine's source (``tests/support/crash_points.py``): a
test fails when one has no case here. For each case, an engine armed at the boundary is driven until
it kills itself there (two engines on one redis-server, real echo workers, history in PostgreSQL),
and the other engine must take every job of the case to its end, each state entered once per visit,
with its whole timeline in history once (see ``tests/crash_harness.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import aiohttp
import pytest
from support.cluster import running_cluster
from support.crash_harness import CRASH_APP, TASK_TYPE, Case, Harness, Victim, lapse_feed_leases
from support.crash_points import write_boundaries
from support.postgres_server import PostgresServer

pytestmark = [pytest.mark.slow]


# -- scenarios: what each case does to the victim ---------------------------------------------------
async def chain(victim: Victim, **data: object) -> None:
    """Two jobs start -> work (a task) -> finish, their worker started after them."""
    for _ in range(2):
        await victim.create("crash_chain", **data)
    victim.worker()


async def transient_then_success(victim: Victim) -> None:
    """Each job's task fails once, then succeeds: counted across workers (``fail_times`` counts each
    worker's own attempts, so a retry on each of the survivor's workers used up all three)."""
    await chain(victim, params={"fail_once_file": f"{victim.cluster.tmp_path}/fail-once-{uuid.uuid4().hex}"})


async def flaky_handler(victim: Victim) -> None:
    await chain(victim, flaky=True)


async def timing_out(victim: Victim) -> None:
    """A worker that answers after the task's timeout: every attempt times out, then it is released."""
    await victim.create("crash_chain", params={"sleep_s": 2.5}, task_timeout_s=1)
    victim.worker()


async def release_timed_out(victim: Victim) -> None:
    job_id = await victim.only_job()
    await victim.wait_status(job_id, "quarantined", timeout_s=40)
    await victim.post(f"/api/v1/jobs/{job_id}/release", {"params": {"sleep_s": 0}})


async def worker_dies(victim: Victim) -> None:
    """The worker that takes the task dies at once (exit): it expires, and its task goes to another."""
    marker = victim.cluster.tmp_path / f"crash-once-{uuid.uuid4().hex}"
    await victim.create("crash_chain", params={"crash_once_file": str(marker)})
    victim.worker()
    victim.worker()


async def fan_out(victim: Victim) -> None:
    await victim.create("crash_fanout", branches=3)
    victim.worker()


async def sub_job(victim: Victim) -> None:
    await victim.create("crash_parent")
    victim.worker()


async def cancelled_parent(victim: Victim) -> None:
    """A parent cancelled while its sub-job's task runs: the sub-job is cancelled too."""
    parent = await victim.create("crash_parent", role="cancelled", params={"sleep_s": 30})
    victim.worker()
    await victim.wait_status(parent, "waiting_for_sub_job")
    await asyncio.sleep(1.0)  # the worker takes the sub-job's task
    await victim.post(f"/api/v1/jobs/{parent}/cancel")


async def approved(victim: Victim) -> None:
    job = await victim.create("crash_approval")
    await victim.wait_status(job, "waiting_for_human")
    await victim.post(f"/_public/webhooks/approval/{job}", {"decision": "go"})


async def failed_by_operator(victim: Victim) -> None:
    job = await victim.create("crash_approval", role="failed")
    await victim.wait_status(job, "waiting_for_human")
    await victim.post(f"/api/v1/jobs/{job}/fail", {"reason": "harness"})


async def failed_then_retried(victim: Victim) -> None:
    job = await victim.create("crash_approval")
    await victim.wait_status(job, "waiting_for_human")
    await victim.post(f"/api/v1/jobs/{job}/fail", {"reason": "harness"})
    await victim.wait_status(job, "failed")
    await victim.post(f"/api/v1/jobs/{job}/retry")


async def approve(victim: Victim) -> None:
    job_id = await victim.only_job()
    await victim.wait_status(job_id, "waiting_for_human")
    await victim.post(f"/_public/webhooks/approval/{job_id}", {"decision": "go"})


async def quarantined_then_released(victim: Victim) -> None:
    job = await victim.create("crash_chain", params={"outcome": "permanent"})
    victim.worker()
    await victim.wait_status(job, "quarantined")
    await victim.post(f"/api/v1/jobs/{job}/release", {"params": {"outcome": "success"}})


async def engine_error(victim: Victim) -> None:
    await victim.create("crash_chain", role="broken", engine_error=True)


async def hung_up_poll(victim: Victim) -> None:
    """A worker's long poll hangs up before its task is sent: the task is given back."""
    await victim.register("hangs-up", "crash_gone")
    victim.hang_up_poll("hangs-up")
    await asyncio.sleep(0.3)  # the poll waits on the engine
    await victim.create("crash_chain", task_type="crash_gone")


async def serve_given_back(victim: Victim) -> None:
    victim.worker("crash_gone", keep=True)  # on the survivor: nobody else runs that type


async def stopped(victim: Victim) -> None:
    """The victim is asked to stop (SIGTERM) with jobs in flight; it dies giving up history's lease."""
    await chain(victim, params={"sleep_s": 0.5})
    await asyncio.sleep(1.0)
    victim.engine.proc.terminate()


# -- breakpoints: an approval job held at its end state ("finish") by a breakpoint of its own ----------
async def waiting_approval(victim: Victim, role: str = "job") -> str:
    job = await victim.create("crash_approval", role=role)
    await victim.wait_status(job, "waiting_for_human")
    return job


async def breakpoint_set(victim: Victim) -> None:
    job = await waiting_approval(victim)
    await victim.post("/api/v1/breakpoints", {"job_id": job, "state": "finish"})


async def held(victim: Victim, state: str = "finish") -> str:
    job = await waiting_approval(victim)
    await victim.call("POST", "/api/v1/breakpoints", {"job_id": job, "state": state})
    await victim.post(f"/_public/webhooks/approval/{job}", {"decision": "go"})
    return job


async def stepped_into(victim: Victim) -> None:
    """A step ('*'): held at the next state, and the step's breakpoint used up."""
    await held(victim, "*")


async def stepped_from_held(victim: Victim) -> None:
    """Held, then stepped: into its end state, whose handler ends it (no next state to hold at)."""
    job = await held(victim)
    await victim.wait_status(job, "held")
    await victim.post(f"/api/v1/jobs/{job}/continue", {"step": True})


async def continued(victim: Victim) -> None:
    job = await held(victim)
    await victim.wait_status(job, "held")
    await victim.post(f"/api/v1/jobs/{job}/continue")


async def step_dropped_by_continue(victim: Victim) -> None:
    """A held job given a step, then continued rather than stepped: the step's breakpoint goes."""
    job = await held(victim)
    await victim.wait_status(job, "held")
    await victim.call("POST", "/api/v1/breakpoints", {"job_id": job, "state": "*"})
    await victim.post(f"/api/v1/jobs/{job}/continue")


async def breakpoint_removed(victim: Victim) -> None:
    """Removed: the job it held is continued (by the removal's timer, when the remover dies first)."""
    job = await waiting_approval(victim)
    breakpoint = await victim.call("POST", "/api/v1/breakpoints", {"job_id": job, "state": "finish"})
    await victim.post(f"/_public/webhooks/approval/{job}", {"decision": "go"})
    await victim.wait_status(job, "held")
    await victim.delete(f"/api/v1/breakpoints/{breakpoint['id']}")


async def stale_step_swept(victim: Victim) -> None:
    """A step given to a job then cancelled is swept when another breakpoint is removed."""
    cancelled = await waiting_approval(victim, role="cancelled")
    other = await waiting_approval(victim)
    await victim.call("POST", "/api/v1/breakpoints", {"job_id": cancelled, "state": "*"})
    await victim.call("POST", f"/api/v1/jobs/{cancelled}/cancel")
    breakpoint = await victim.call("POST", "/api/v1/breakpoints", {"job_id": other, "state": "finish"})
    await victim.delete(f"/api/v1/breakpoints/{breakpoint['id']}")


# -- bulk actions: quarantined chain jobs released (or the rest kept) in bulk -------------------------
async def quarantined_jobs(victim: Victim, roles: tuple[str, ...]) -> list[str]:
    jobs = [await victim.create("crash_chain", role=role, params={"outcome": "permanent"}) for role in roles]
    victim.worker()
    for job in jobs:
        await victim.wait_status(job, "quarantined")
    return jobs


async def bulk_released(victim: Victim) -> None:
    jobs = await quarantined_jobs(victim, ("job", "job"))
    body = {"action": "release", "job_ids": jobs, "params": {"outcome": "success"}, "rate_per_s": 5}
    await victim.post("/api/v1/bulk", body)


async def bulk_cancelled(victim: Victim) -> None:
    """Cancelled after its first job: the second stays quarantined."""
    first, _ = jobs = await quarantined_jobs(victim, ("job", "kept"))
    body = {"action": "release", "job_ids": jobs, "params": {"outcome": "success"}, "rate_per_s": 0.5}
    bulk = await victim.call("POST", "/api/v1/bulk", body)
    await victim.wait_status(first, "waiting_for_worker", "running", "finished")
    await victim.post(f"/api/v1/bulk/{bulk['id']}/cancel")


async def bulk_done(victim: Victim) -> None:
    """The survivor carries the bulk action to its end (quarantined jobs count as ended for the harness)."""
    deadline = asyncio.get_running_loop().time() + 30
    while (await victim.call("GET", "/api/v1/bulk"))["bulk_actions"][0]["status"] == "running":
        assert asyncio.get_running_loop().time() < deadline, "the bulk action never ended"
        await asyncio.sleep(0.1)


# -- reruns: finished chain jobs started again at their second state ---------------------------------
async def finished_jobs(victim: Victim, count: int) -> list[str]:
    """Jobs finished and in history: the victim writes it (the frozen survivor's lease lapses)."""
    jobs = [await victim.create("crash_chain") for _ in range(count)]
    victim.worker()
    lapse_feed_leases(victim.cluster)
    for job in jobs:
        await victim.wait_history(job, "job_finished")
    return jobs


async def rerun(victim: Victim) -> None:
    (job,) = await finished_jobs(victim, 1)
    await victim.post(f"/api/v1/jobs/{job}/rerun", {"state": "work"})


async def bulk_rerun(victim: Victim) -> None:
    jobs = await finished_jobs(victim, 2)
    await victim.post("/api/v1/bulk", {"action": "rerun", "job_ids": jobs, "state": "work", "rate_per_s": 5})


async def continue_held(victim: Victim) -> None:
    job_id = await victim.only_job()
    await victim.wait_status(job_id, "held")
    await victim.post(f"/api/v1/jobs/{job_id}/continue")


async def approve_then_continue(victim: Victim) -> None:
    job_id = await victim.only_job()
    await victim.post(f"/_public/webhooks/approval/{job_id}", {"decision": "go"})
    await continue_held(victim)


async def approve_the_other(victim: Victim) -> None:
    for job_id in await victim.cluster.jobs_since(victim.since):
        if (await victim.job(job_id))["status"] == "waiting_for_human":
            await victim.post(f"/_public/webhooks/approval/{job_id}", {"decision": "go"})


CANCELLED = {"cancelled": "cancelled", "child": "cancelled"}
CASES = [
    Case("Operations.create:create_job", chain),
    Case("Workers.register:save_worker", chain),
    Case("Workers.heartbeat:save_worker", chain),
    Case("Workers.next_task:take_task", chain),
    Case("Workers.record_progress:update_task", chain),
    Case("Workers.give_back:commit", hung_up_poll, then=serve_given_back),
    Case("JobRunner.consume:take_runnable", chain),
    Case("JobRunner._lease:lease_and_get_job", chain),
    Case("JobRunner.step:commit", chain),
    Case("JobRunner.step:commit", sub_job, why="the parent waits and its sub-job is created in one commit"),
    Case("JobRunner.step:commit", sub_job, after=3, why="the sub-job ended, its parent not resumed yet"),
    Case("JobRunner.consume:finish_step", chain),
    Case("JobRunner.gather:commit", fan_out),
    Case("JobRunner._quarantine_after_crash:commit", engine_error, expect={"broken": "quarantined"}),
    Case("ResultProcessor.submit:commit", chain),
    Case("ResultProcessor._branch_done:add_branch_result", fan_out, after=3, why="the last branch recorded"),
    Case("ResultProcessor._change_while:commit", timing_out, then=release_timed_out),
    Case("ResultProcessor._change_while:commit", worker_dies, why="the task of an expired worker retried", settle=True),
    Case("ResultProcessor._change_while:commit", transient_then_success),
    Case("Operations.cancel:commit", cancelled_parent, expect=CANCELLED, why="before its sub-job is cancelled"),
    Case("Operations.cancel:commit", cancelled_parent, after=2, expect=CANCELLED, why="the sub-job's cancel"),
    Case("Operations.decide:commit", approved),
    Case("Operations.fail:commit", failed_by_operator, expect={"failed": "failed"}),
    Case("Operations.retry:commit", failed_then_retried, then=approve),
    Case("Operations.release:commit", quarantined_then_released),
    Case("Operations.resume_parent:commit", sub_job),
    Case("Operations.retry_step_due:commit", flaky_handler),
    Case("Operations.set_breakpoint:set_breakpoint", breakpoint_set, then=approve_then_continue),
    Case("JobRunner._hold:commit", held, then=continue_held),
    Case("JobRunner._hold:commit", stepped_into, then=continue_held, why="the step's breakpoint not removed yet"),
    Case("JobRunner._hold:remove_breakpoint", stepped_into, then=continue_held),
    Case("JobRunner._drop_steps:remove_breakpoint", stepped_from_held),
    Case("Operations.continue_job:set_breakpoint", stepped_from_held, then=continue_held),
    Case("Operations.continue_job:remove_breakpoint", step_dropped_by_continue, then=continue_held),
    Case("Operations.continue_job:commit", continued),
    Case("Operations.remove_breakpoint:remove_breakpoint", breakpoint_removed, why="its timer continues the job"),
    Case("Operations.sweep_holds:remove_breakpoint", stale_step_swept, then=approve_the_other, expect=CANCELLED),
    Case("BulkActions.start:create_bulk", bulk_released, then=bulk_done, why="the bulk carried on by the survivor"),
    Case("BulkActions.step_due:save_bulk", bulk_released, then=bulk_done, why="its first round recorded"),
    Case(
        "Operations.release:commit", bulk_released, then=bulk_done, why="a bulk's job released, its round not recorded"
    ),
    Case("BulkActions.cancel:save_bulk", bulk_cancelled, expect={"kept": "quarantined"}),
    Case("Operations.rerun:create_job", rerun),
    Case("Operations.rerun:create_job", bulk_rerun, then=bulk_done, why="a bulk's rerun started, round not recorded"),
    Case("Scheduler.tick:claim_timers", transient_then_success),
    Case("Scheduler.tick:finish_timers", transient_then_success),
    Case("Scheduler.reap_workers:expire_workers", worker_dies, why="an expired worker's tasks handed on", settle=True),
    Case("HistoryWriter._write_batch:lease_feed", chain),
    Case("HistoryWriter._write:write_feed", chain),
    Case("HistoryWriter._written:trim_feed", chain),
    Case("HistoryWriter.stop:lease_feed", stopped),
    Case("HistoryWriter.start:lease_feed", chain, at_start=True, why="the survivor takes the lease back"),
]


def test_every_write_boundary_has_a_case() -> None:
    covered = {case.boundary for case in CASES}
    found = write_boundaries()
    assert found - covered == set(), "write boundaries without a crash case"
    assert covered - found == set(), "cases of boundaries the engine no longer has"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Harness]:
    with running_cluster(tmp_path_factory.mktemp("crash"), postgres, None, engines=0) as cluster:  # type: ignore[arg-type]
        survivor = cluster.start_engine(CRASH_APP)
        cluster.wait_engines()
        for _ in range(2):
            cluster.start_worker(survivor, task_types=TASK_TYPE)
        yield Harness(cluster)


@pytest.fixture
def harnessed(harness: Harness, session: aiohttp.ClientSession) -> Harness:
    """The harness, its cluster talking through this test's session."""
    harness.cluster.session = session
    return harness


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_an_engine_killed_at_the_boundary_loses_nothing(
    case: Case, harnessed: Harness, session: aiohttp.ClientSession
) -> None:
    counts = await harnessed.run(case, session)
    print(f"{case.id}: {counts}")
