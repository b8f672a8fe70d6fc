"""The storage contract on :class:`RedisStorage` against a real redis-server, and what only Redis adds:
several engine processes sharing one Redis.

Each ``RedisStorage(url=...)`` below has its own connection pool, reader and subscription, as a separate
engine process would; one test runs a real second process and kills it with SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from support.redis_server import RedisServer, running_redis
from support.storage_contract import (
    LONG,
    SHORT,
    StorageContract,
    claim,
    dispatch,
    fan_out,
    make_job,
    make_task,
    make_worker,
    new_job,
    nobody,
    nonzero,
    take,
    take_ids,
)

from avtomatika.errors import VersionConflict
from avtomatika.events import LISTENING
from avtomatika.models import Job, JobStatus, Task, TaskStatus, named
from avtomatika.storage.base import BranchAnswer, Commit, JobFilter
from avtomatika.storage.redis import RedisStorage, encoding, keys, runnable

#: A short lease, so take-overs happen within a test.
LEASE_S = 0.3
#: Long enough that a poll woken in time was woken by a notification, not by the periodic re-check.
NO_RECHECK_S = 60.0

StorageFactory = Callable[..., Awaitable[RedisStorage]]


class TestRedisStorage(StorageContract):
    @pytest.fixture
    async def storage(self, redis_client: aioredis.Redis) -> AsyncIterator[RedisStorage]:
        storage = RedisStorage(redis_client, lease_s=LEASE_S)
        await storage.connect()
        yield storage
        await storage.close()


@pytest.fixture
async def make_storage(redis_server: RedisServer, redis_client: aioredis.Redis) -> AsyncIterator[StorageFactory]:
    """Build connected storages on the (flushed) session server, each like one engine process."""
    made: list[RedisStorage] = []

    async def make(url: str | None = None, **options: Any) -> RedisStorage:
        storage = RedisStorage(url=url or redis_server.url, **{"lease_s": LEASE_S, **options})
        await storage.connect()
        made.append(storage)
        return storage

    yield make
    for storage in made:
        await storage.close()


async def finish(storage: RedisStorage, job: Job, status: str = JobStatus.FINISHED) -> Job:
    job.status = status
    return await storage.commit(Commit(job))


# -- several processes on one Redis ---------------------------------------------------------------
async def test_a_long_poll_on_one_process_gets_a_task_committed_through_another(make_storage: StorageFactory) -> None:
    a, b = await make_storage(recheck_s=NO_RECHECK_S), await make_storage(recheck_s=NO_RECHECK_S)
    poll = asyncio.create_task(take(a, make_worker("a"), timeout_s=5.0))
    await asyncio.sleep(SHORT)
    job = await new_job(b)
    task = make_task(job)
    await dispatch(b, job, task)
    taken = await poll
    assert taken is not None
    assert taken.id == task.id


async def test_a_long_poll_on_one_process_gets_a_task_preassigned_through_another(
    make_storage: StorageFactory,
) -> None:
    a, b = await make_storage(recheck_s=NO_RECHECK_S), await make_storage(recheck_s=NO_RECHECK_S)
    worker = make_worker("a")
    poll = asyncio.create_task(take(a, worker, timeout_s=5.0))
    await asyncio.sleep(SHORT)
    job = await new_job(b)
    task = make_task(job, "other", worker_id=worker.worker_id)
    await dispatch(b, job, task)
    taken = await poll
    assert taken is not None
    assert taken.id == task.id


async def test_a_poll_woken_for_a_task_it_cannot_take_hands_the_wake_on(make_storage: StorageFactory) -> None:
    """One notification wakes one poll; an ineligible one passes it on instead of the task waiting."""
    storage = await make_storage(recheck_s=NO_RECHECK_S)
    picky = asyncio.create_task(take(storage, make_worker("a"), timeout_s=3.0, eligible=nobody))
    await asyncio.sleep(SHORT)  # first in line for the wake-up
    able = asyncio.create_task(take(storage, make_worker("a"), timeout_s=3.0))
    await asyncio.sleep(SHORT)
    job = await new_job(storage)
    task = make_task(job, requirements={"gpu": True})
    await dispatch(storage, job, task)
    taken = await asyncio.wait_for(able, 2.0)
    assert taken is not None
    assert taken.id == task.id
    picky.cancel()
    with pytest.raises(asyncio.CancelledError):
        await picky


def count_calls(storage: RedisStorage, script: str) -> list[Any]:
    """Record the reply of every call of ``script`` (the list returned fills as calls are made)."""
    original, replies = storage._scripts[script], []

    async def counted(*, keys: list[Any], args: list[Any], again: list[Any] | None = None) -> Any:
        reply = await original(keys=keys, args=args, again=again)
        replies.append(reply)
        return reply

    storage._scripts[script] = counted  # type: ignore[assignment]
    return replies


async def test_concurrent_takes_of_one_process_cost_one_script_call_each(make_storage: StorageFactory) -> None:
    """The script that looks takes too: pollers of one process never lose a race for a task they saw."""
    storage = await make_storage()
    job = await new_job(storage)
    tasks = [make_task(job, t, priority=i % 3) for i in range(12) for t in ("a", "b")]
    await dispatch(storage, job, *tasks)
    calls = count_calls(storage, "take_task")
    workers = [make_worker("a", "b"), make_worker("b", "a")]
    taken = await asyncio.gather(*(take(storage, workers[i % 2], timeout_s=0) for i in range(len(tasks))))
    assert sorted(task.id for task in taken if task is not None) == sorted(task.id for task in tasks)
    assert len(calls) == len(tasks)


async def test_a_task_eligible_must_be_asked_about_costs_one_more_call(make_storage: StorageFactory) -> None:
    storage = await make_storage()
    job = await new_job(storage)
    picky, plain = make_task(job, priority=5, requirements={"gpu": True}), make_task(job)
    await dispatch(storage, job, picky, plain)
    calls = count_calls(storage, "take_task")
    taken = await take(storage, make_worker("a"), timeout_s=0, eligible=nobody)
    assert taken is not None
    assert taken.id == plain.id
    assert [reply[0] for reply in calls] == [2, 1]  # the picky task handed over to be decided, then a take


async def test_tasks_are_each_taken_once_by_pollers_on_two_processes(make_storage: StorageFactory) -> None:
    a, b = await make_storage(), await make_storage()
    job = await new_job(a)
    tasks = [make_task(job, priority=i % 3) for i in range(40)]

    async def poller(storage: RedisStorage) -> list[str]:
        taken = []
        while (task := await take(storage, make_worker("a"), timeout_s=0.3)) is not None:
            taken.append(task.id)
        return taken

    polls = [asyncio.create_task(poller(storage)) for storage in (a, b) for _ in range(5)]
    await asyncio.sleep(SHORT)
    await dispatch(b, job, *tasks)
    taken = [task_id for poll in polls for task_id in await poll]
    assert sorted(taken) == sorted(task.id for task in tasks)
    assert sum((await a.worker_load()).values()) == 40


async def test_a_job_held_by_a_live_process_is_not_taken_over(make_storage: StorageFactory) -> None:
    a, b = await make_storage(), await make_storage()
    job = await a.create_job(make_job())
    assert await a.take_runnable(LONG) == job.id
    assert await b.take_runnable(4 * LEASE_S) is None  # a renews its lease while it lives
    await a.ack_runnable(job.id)
    assert await b.take_runnable(2 * LEASE_S) is None


async def test_acknowledged_entries_before_the_oldest_pending_one_are_deleted_now_and_then(
    make_storage: StorageFactory, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runnable, "TRIM_EVERY", 2)
    storage = await make_storage()
    first, held, second, unread = [await storage.create_job(make_job()) for _ in range(4)]
    for job in (first, held, second):
        assert await storage.take_runnable(LONG) == job.id
    await storage.ack_runnable(first.id)
    assert await redis_client.xlen("avtomatika:runnable") == 4
    await storage.ack_runnable(second.id)  # the second acknowledgement: a trim
    entries = await redis_client.xrange("avtomatika:runnable")
    assert [fields[b"job"].decode() for _, fields in entries] == [held.id, second.id, unread.id]


async def test_a_job_taken_and_never_acked_is_taken_over_after_the_lease(make_storage: StorageFactory) -> None:
    a, b = await make_storage(), await make_storage()
    job = await a.create_job(make_job())
    assert await a.take_runnable(LONG) == job.id
    await a.close()  # stops renewing without acknowledging: as if it died mid-step
    started = time.monotonic()
    assert await b.take_runnable(10 * LEASE_S) == job.id
    assert time.monotonic() - started >= LEASE_S / 2  # not before the lease ran out
    await b.ack_runnable(job.id)
    assert await b.take_runnable(2 * LEASE_S) is None


async def test_a_dead_process_job_is_taken_over_when_the_claim_interval_outlasts_the_client_read_timeout(
    redis_server: RedisServer, make_storage: StorageFactory
) -> None:
    # Half the lease (2 s) is longer than the client's read timeout (1 s; redis-py 8's default is 5 s, and
    # engines lease for 30 s): a blocking read that long was cut by the client and sent again, as often
    # as the client retries (30 times here, as the storage's own pool does), and meanwhile the process
    # never looked for entries to take over (found by SIGKILLing an engine: its jobs stayed pending).
    a = await make_storage(lease_s=4.0)
    client = redis_server.client(socket_timeout=1.0, retry=Retry(NoBackoff(), 30))
    b = RedisStorage(client, lease_s=4.0)
    await b.connect()
    try:
        job = await a.create_job(make_job())
        assert await a.take_runnable(LONG) == job.id
        await a.close()  # as if killed mid-step
        assert await b.take_runnable(20.0) == job.id
    finally:
        await b.close()
        await client.aclose()


def test_a_storage_made_from_a_url_lets_blocking_reads_wait_as_long_as_they_ask() -> None:
    assert RedisStorage(url="redis://127.0.0.1:1/0").socket_timeout_s is None
    assert RedisStorage(url="redis://127.0.0.1:1/0?socket_timeout=3").socket_timeout_s == 3.0


async def _nothing_to_take_over(a: RedisStorage, b: RedisStorage, job: Job) -> None:
    """Once ``a`` closes, ``b`` finds no entry of ``job`` to take over, and its lease free."""
    await a.close()
    assert await b.take_runnable(3 * LEASE_S) is None
    assert await b.lease_job(job.id, "other")


async def test_a_finished_step_is_neither_taken_over_nor_left_leased(make_storage: StorageFactory) -> None:
    a, b = await make_storage(), await make_storage()
    job = await a.create_job(make_job())
    assert await a.take_runnable(LONG) == job.id
    assert await a.lease_job(job.id, "stepper")
    await a.finish_step(job.id, "stepper")
    await _nothing_to_take_over(a, b, job)


async def test_a_commit_that_ends_the_step_releases_its_lease_and_acknowledges_its_entry(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """Commit.ends_step: what finish_step does, in the commit's own script; finish_step then sends nothing."""
    a, b = await make_storage(), await make_storage()
    job = await a.create_job(make_job())
    assert await a.take_runnable(LONG) == job.id
    start = await a.lease_and_get_job(job.id, "stepper")
    assert start.job is not None
    start.job.status = JobStatus.FINISHED
    await a.commit(Commit(start.job, ends_step="stepper"))
    assert await redis_client.exists(a.keys.step_lease(job.id)) == 0
    pending = await redis_client.xpending(a.keys.key(keys.RUNNABLE), keys.RUNNABLE_GROUP)
    assert pending["pending"] == 0
    await redis_client.config_resetstat()
    await a.finish_step(job.id, "stepper")
    assert "cmdstat_evalsha" not in await redis_client.info("commandstats")
    await _nothing_to_take_over(a, b, job)


async def test_a_commit_that_ends_a_step_whose_lease_was_taken_over_leaves_that_lease(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    storage = await make_storage()
    job = await storage.create_job(make_job(), run=False)
    lease_key = storage.keys.step_lease(job.id)
    await redis_client.set(lease_key, "other", px=60_000)  # ours expired, and another process took it
    job.status = JobStatus.FINISHED
    await storage.commit(Commit(job, ends_step="stepper"))
    assert await redis_client.get(lease_key) == b"other"
    assert await redis_client.pttl(lease_key) > 0


async def test_a_commit_that_conflicts_leaves_the_step_to_finish_step(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    a = await make_storage()
    job = await a.create_job(make_job())
    assert await a.take_runnable(LONG) == job.id
    start = await a.lease_and_get_job(job.id, "stepper")
    assert start.job is not None
    await a.commit(Commit(await a.get_job(job.id) or job))  # changed meanwhile
    with pytest.raises(VersionConflict):
        await a.commit(Commit(start.job, ends_step="stepper"))
    assert await redis_client.get(a.keys.step_lease(job.id)) == b"stepper"
    await a.finish_step(job.id, "stepper")
    assert await redis_client.exists(a.keys.step_lease(job.id)) == 0
    pending = await redis_client.xpending(a.keys.key(keys.RUNNABLE), keys.RUNNABLE_GROUP)
    assert pending["pending"] == 0


async def test_counts_that_fall_to_zero_are_kept_and_read_as_none(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """A counter's field at 0 stays (no HDEL per fall); count_jobs leaves it out."""
    storage = await make_storage()
    job = await storage.create_job(make_job(), run=False)
    job.status = JobStatus.FINISHED
    await storage.commit(Commit(job))
    fields = await redis_client.hgetall(storage.keys.key(keys.JOB_COUNTS))
    assert sorted(int(n) for n in fields.values()) == [0, 1]
    assert list((await storage.count_jobs()).values()) == [1]


async def _until(holds: Callable[[], Any]) -> None:
    while not holds():
        await asyncio.sleep(0.01)


async def test_a_job_handed_to_a_waiting_taker_comes_with_its_step_lease(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """The script that queues a job for a taker waiting with a holder takes the lease for it: leasing
    the job then costs no command, and starts from the job as stored then."""
    storage = await make_storage()
    taking = asyncio.create_task(storage.take_runnable(5.0, holder="runner"))
    await _until(lambda: storage._runnable._takers)
    job = await storage.create_job(make_job())
    assert await taking == job.id
    assert await redis_client.get(storage.keys.step_lease(job.id)) == b"runner"
    await redis_client.config_resetstat()
    start = await storage.lease_and_get_job(job.id, "runner")
    assert start == (True, job, [])
    assert "cmdstat_evalsha" not in await redis_client.info("commandstats")
    start.job.status = JobStatus.FINISHED
    await storage.commit(Commit(start.job, ends_step="runner"))
    assert await redis_client.exists(storage.keys.step_lease(job.id)) == 0


async def test_the_last_branch_result_hands_the_job_with_its_lease_and_document(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """The result that completes a fan-out queues its job: handed with its lease, the step starts from
    the job as stored (the script read it: the caller of add_branch_result has no document of it)."""
    storage = await make_storage()
    job, tasks = await fan_out(storage, 2)
    await storage.add_branch_result(job.id, tasks[0].id, {})
    taking = asyncio.create_task(storage.take_runnable(5.0, holder="runner"))
    await _until(lambda: storage._runnable._takers)
    assert await storage.add_branch_result(job.id, tasks[1].id, {}) == BranchAnswer.COMPLETE
    assert await taking == job.id
    await redis_client.config_resetstat()
    start = await storage.lease_and_get_job(job.id, "runner")
    assert start == (True, job, [])
    assert "cmdstat_evalsha" not in await redis_client.info("commandstats")


async def test_a_branch_result_and_a_version_check_read_the_first_bytes_of_the_job_record(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """A fan-out's job record lists every task id: a branch result reads its first bytes for the round's
    size, not all of it (once per result, that was most of redis-server's CPU in a fan-out of 200), and
    so does job_version; the last result reads the record once, for the step it hands out. The task's
    record is read whole, once (it is closed)."""
    storage = await make_storage()
    job, tasks = await fan_out(storage, 3)
    await redis_client.config_resetstat()
    assert await storage.add_branch_result(job.id, tasks[0].id, {}) == BranchAnswer.RECORDED
    assert await storage.job_version(job.id) == job.version
    assert await storage.job_version("gone") is None
    stats = await redis_client.info("commandstats")
    assert stats["cmdstat_get"]["calls"] == 1
    assert stats["cmdstat_getrange"]["calls"] == 3
    await storage.add_branch_result(job.id, tasks[1].id, {})
    assert await storage.add_branch_result(job.id, tasks[2].id, {}) == BranchAnswer.COMPLETE
    assert await storage.take_runnable(LONG) == job.id


async def test_a_lease_taken_with_an_entry_never_stepped_is_released(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """Taken for a holder the job is not leased with, it is released first; left unused, at close."""
    a = await make_storage()
    for stepper in ("other", None):
        taking = asyncio.create_task(a.take_runnable(5.0, holder="runner"))
        await _until(lambda: a._runnable._takers)
        job = await a.create_job(make_job())
        assert await taking == job.id
        if stepper:
            assert (await a.lease_and_get_job(job.id, stepper)).leased
            assert await redis_client.get(a.keys.step_lease(job.id)) == stepper.encode()
            await a.finish_step(job.id, stepper)
    await a.close()
    assert await redis_client.exists(a.keys.step_lease(job.id)) == 0


async def test_a_step_lease_reads_the_job_in_the_same_round_trip(make_storage: StorageFactory) -> None:
    """lease_and_get_job: the job as it was when the lease was taken; nothing when another holds it."""
    stepper, other = await make_storage(), await make_storage()
    job = await stepper.create_job(make_job(), run=False)
    newer = await other.commit(Commit(await other.get_job(job.id) or job))
    assert await stepper.lease_and_get_job(job.id, "stepper") == (True, newer, [])
    assert await other.lease_and_get_job(job.id, "other") == (False, None, [])
    await stepper.release_job_lease(job.id, "stepper")
    assert await stepper.lease_and_get_job("no-such-job", "stepper") == (True, None, [])
    await stepper.release_job_lease("no-such-job", "stepper")


_DOOMED_ENGINE = """
import asyncio, sys
from avtomatika.storage.redis import RedisStorage

async def main() -> None:
    storage = RedisStorage(url=sys.argv[1], lease_s=float(sys.argv[2]), consumer="doomed")
    await storage.connect()
    print(await storage.take_runnable(10), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_job_held_by_a_killed_process_is_taken_over(
    redis_server: RedisServer, make_storage: StorageFactory
) -> None:
    survivor = await make_storage()
    job = await survivor.create_job(make_job())
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DOOMED_ENGINE, redis_server.url, str(LEASE_S), stdout=asyncio.subprocess.PIPE
    )
    try:
        line = await asyncio.wait_for(doomed.stdout.readline(), 20) if doomed.stdout else b""
        assert line.decode().strip() == job.id
        assert await survivor.take_runnable(4 * LEASE_S) is None  # alive: it keeps its lease
    finally:
        doomed.kill()  # SIGKILL: no cleanup of any kind
        await doomed.wait()
    assert await survivor.take_runnable(10 * LEASE_S) == job.id


async def test_concurrent_commits_on_one_job_exactly_one_wins(make_storage: StorageFactory) -> None:
    a, b = await make_storage(), await make_storage()
    job = await new_job(a)
    for round_ in range(30):
        mine, theirs = await a.get_job(job.id), await b.get_job(job.id)
        assert mine is not None
        assert theirs is not None
        mine.state, theirs.state = f"a{round_}", f"b{round_}"
        outcomes = await asyncio.gather(
            a.commit(Commit(mine, tasks=[make_task(mine, "a")])),
            b.commit(Commit(theirs, tasks=[make_task(theirs, "b")])),
            return_exceptions=True,
        )
        winners = [outcome for outcome in outcomes if isinstance(outcome, Job)]
        assert len(winners) == 1
        assert sum(isinstance(outcome, VersionConflict) for outcome in outcomes) == 1
        stored = await a.get_job(job.id)
        assert stored == winners[0]
        assert stored.version == round_ + 2
    assert sum((await a.queue_lengths()).values()) == 30  # only the winners' tasks


async def test_concurrent_branch_results_from_two_processes_are_all_counted(make_storage: StorageFactory) -> None:
    a, b = await make_storage(), await make_storage()
    job, tasks = await fan_out(a, 200)
    answers = await asyncio.gather(
        *((a, b)[i % 2].add_branch_result(job.id, task.id, {"i": i}) for i, task in enumerate(tasks))
    )
    assert sorted(answers) == sorted([BranchAnswer.RECORDED] * 199 + [BranchAnswer.COMPLETE])
    assert len(await b.branch_results(job.id)) == 200


async def test_timers_and_expired_workers_are_claimed_once_across_processes(make_storage: StorageFactory) -> None:
    a, b = await make_storage(), await make_storage()
    at = time.time()
    job = await new_job(a)
    await a.commit(Commit(job, timers={f"t{i}": at - i for i in range(60)}))
    workers = [make_worker("a", expires_in=-1) for _ in range(10)]
    for worker in workers:
        await b.save_worker(worker)
    timer_claims = await asyncio.gather(*(claim(s, at, limit=7) for s in (a, b) for _ in range(6)))
    worker_claims = await asyncio.gather(*(s.expire_workers(time.time()) for s in (a, b) for _ in range(3)))
    assert sorted(t for claim in timer_claims for t in claim) == sorted(f"t{i}" for i in range(60))
    claimed_workers = [record.worker_id for claim in worker_claims for record, _ in claim]
    assert sorted(claimed_workers) == sorted(worker.worker_id for worker in workers)


async def test_a_task_left_in_a_silent_worker_inbox_is_taken_over_through_another_process(
    make_storage: StorageFactory,
) -> None:
    a, b = await make_storage(), await make_storage()
    b.steal_after_s = 0.05
    silent, idle = make_worker("a"), make_worker("a")
    job = await new_job(a)
    task = make_task(job, worker_id=silent.worker_id)
    await dispatch(a, job, task)
    taken = await take(b, idle, timeout_s=5.0)
    assert taken is not None
    assert taken.worker_id == idle.worker_id
    assert nonzero(await a.worker_load()) == {idle.worker_id: 1}
    assert await take(a, silent) is None


async def test_events_published_by_one_process_reach_another(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    a, b = await make_storage(), await make_storage()
    sender, receiver = a.event_transport(), b.event_transport()
    received: list[bytes] = []

    async def listen() -> None:
        async for payload in receiver.listen_events():
            if not payload.startswith(LISTENING):  # another's announcement (see the next test)
                received.append(payload)
            if len(received) == 3:
                return

    listening = asyncio.create_task(listen())
    while not (await redis_client.pubsub_numsub(receiver.channel))[0][1]:
        await asyncio.sleep(0.01)
    await sender.publish_events([b"one", b"two", b"three"])
    await asyncio.wait_for(listening, 5)
    assert received == [b"one", b"two", b"three"]
    assert receiver.channel == "avtomatika:events"


async def test_a_process_subscribing_to_events_says_so_and_is_counted(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """The events channel: each subscriber announces itself (LISTENING), and hears the others'
    announcements, not its own; ``listeners`` counts the other processes subscribed, not this one."""
    a, b = await make_storage(), await make_storage()
    first, second = a.event_transport(), b.event_transport()
    assert await first.listeners() == 0
    heard: list[bytes] = []

    async def listen(transport: Any) -> None:
        async for payload in transport.listen_events():
            heard.append(payload)

    listening = [asyncio.create_task(listen(first))]
    await asyncio.wait_for(_subscribed(redis_client, first.channel, 1), 5)
    assert await first.listeners() == 0  # only itself
    listening.append(asyncio.create_task(listen(second)))
    await asyncio.wait_for(_subscribed(redis_client, first.channel, 2), 5)
    assert await first.listeners() == 1
    assert await second.listeners() == 1
    await asyncio.wait_for(_until(lambda: bool(heard)), 5)
    assert [payload[: len(LISTENING)] for payload in heard] == [LISTENING]  # the second's, heard by the first
    for task in listening:
        task.cancel()
    await asyncio.gather(*listening, return_exceptions=True)
    assert not a.worker_command_transport().announce  # commands announce nothing


async def _subscribed(redis_client: aioredis.Redis, channel: str, count: int) -> None:
    while (await redis_client.pubsub_numsub(channel))[0][1] < count:
        await asyncio.sleep(0.01)


# -- the connection pool --------------------------------------------------------------------------
async def test_the_pool_waits_instead_of_raising_under_load(make_storage: StorageFactory) -> None:
    storage = await make_storage(max_connections=4)
    jobs = await asyncio.gather(*(storage.create_job(make_job(), run=False) for _ in range(100)))
    read = await asyncio.gather(*(storage.get_job(job.id) for job in jobs))
    job, tasks = await fan_out(storage, 100)
    answers = await asyncio.gather(*(storage.add_branch_result(job.id, task.id, {}) for task in tasks))
    assert read == jobs
    assert answers.count(BranchAnswer.COMPLETE) == 1


async def test_waiting_pollers_hold_no_connection(make_storage: StorageFactory) -> None:
    storage = await make_storage(max_connections=4)
    task_polls = [asyncio.create_task(take(storage, make_worker("a"), timeout_s=5.0)) for _ in range(30)]
    job_polls = [asyncio.create_task(storage.take_runnable(5.0)) for _ in range(30)]
    await asyncio.sleep(SHORT)
    job = await new_job(storage)
    tasks = [make_task(job) for _ in range(30)]
    await dispatch(storage, job, *tasks)
    jobs = [await storage.create_job(make_job()) for _ in range(30)]
    assert sorted(t.id for t in await asyncio.gather(*task_polls) if t) == sorted(t.id for t in tasks)
    assert sorted(await asyncio.gather(*job_polls)) == sorted(j.id for j in jobs)  # type: ignore[type-var]


# -- retried calls (redis-py resends a command whose reply was lost) ------------------------------
def run_twice(storage: RedisStorage, script: str) -> None:
    """Make every call of ``script`` run twice, as a retry after a lost reply would (sent again as the
    caller says a call is that may have run)."""
    original = storage._scripts[script]

    async def twice(*, keys: list[Any], args: list[Any], again: list[Any] | None = None) -> Any:
        await original(keys=keys, args=args)
        return await original(keys=keys, args=args if again is None else again)

    storage._scripts[script] = twice  # type: ignore[assignment]


async def test_a_command_whose_connection_was_lost_is_sent_again_as_its_caller_says(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """A command that may have run is sent again in the form its caller gives for that (a script is
    then told to look for the reply it kept, see ``keys.REPLY``)."""
    storage = await make_storage()
    client_id = await storage.connection.execute("CLIENT", "ID")
    blocked = asyncio.create_task(
        storage.connection.execute_many([("BLPOP", "nothing-comes", 10)], again=[("ECHO", "sent again")])
    )
    await asyncio.sleep(SHORT)
    await redis_client.client_kill_filter(_id=client_id)
    assert await blocked == [b"sent again"]


async def test_a_retried_commit_is_applied_once_and_succeeds(make_storage: StorageFactory) -> None:
    storage = await make_storage()
    job = await new_job(storage)
    run_twice(storage, "commit")
    committed = await storage.commit(Commit(job, run=True, tasks=[make_task(job)]))
    assert committed.version == 2
    assert (await storage.get_job(job.id)) == committed
    assert (await storage.queue_lengths()) == {"a": 1}
    assert await storage.take_runnable(LONG) == job.id
    assert await storage.take_runnable(SHORT) is None


async def test_a_new_job_is_stored_without_being_read_and_a_retried_create_is_applied_once(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    storage = await make_storage()
    await redis_client.config_resetstat()
    job = await storage.create_job(make_job(), run=False)
    assert "cmdstat_get" not in await redis_client.info("commandstats")
    run_twice(storage, "create_job")
    again = await storage.create_job(make_job())
    assert await storage.get_job(again.id) == again
    assert sum(nonzero(await storage.count_jobs()).values()) == 2
    assert await storage.take_runnable(LONG) == again.id
    assert await storage.take_runnable(SHORT) is None
    job.state = "moved"  # the same id created again: stored again, counted once
    await storage.create_job(job, run=False)
    assert (await storage.get_job(job.id)).state == "moved"  # type: ignore[union-attr]
    assert sum(nonzero(await storage.count_jobs()).values()) == 2


async def test_an_entry_read_for_a_waiting_taker_by_a_call_whose_reply_was_lost_is_taken_over(
    make_storage: StorageFactory,
) -> None:
    """A job queued while a taker waits is read for it by the queuing script; lost, it comes after the lease."""
    storage = await make_storage()
    run_twice(storage, "create_job")
    poll = asyncio.create_task(storage.take_runnable(20 * LEASE_S))
    await asyncio.sleep(SHORT)  # waiting: the first run reads the entry for this process, its reply is lost
    job = await storage.create_job(make_job())
    assert await poll == job.id
    await storage.ack_runnable(job.id)
    assert await storage.take_runnable(2 * LEASE_S) is None


async def test_a_job_queued_for_a_waiting_taker_after_redis_lost_everything_is_stepped(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """Without the consumer group (a Redis restarted empty), queuing still works; the reader recreates it."""
    storage = await make_storage()
    poll = asyncio.create_task(storage.take_runnable(20 * LEASE_S))
    await asyncio.sleep(SHORT)
    await redis_client.flushall()
    job = await storage.create_job(make_job())
    assert await poll == job.id


async def test_retried_claims_return_what_the_first_call_claimed(make_storage: StorageFactory) -> None:
    storage = await make_storage()
    at = time.time()
    job = await new_job(storage)
    task = make_task(job)
    await storage.commit(Commit(job, tasks=[task], timers={"t1": at - 1}))
    dead = make_worker("a", expires_in=-1)
    await storage.save_worker(dead)
    for script in ("take_task", "claim_timers", "expire_workers"):
        run_twice(storage, script)
    taken = await take(storage, make_worker("a"))
    assert taken is not None
    assert taken.id == task.id
    assert await claim(storage, at) == ["t1"]
    assert [record.worker_id for record, _ in await storage.expire_workers(time.time())] == [dead.worker_id]


# -- keys and lifecycle ---------------------------------------------------------------------------
async def test_close_ends_even_when_a_redis_call_swallows_its_cancellation(make_storage: StorageFactory) -> None:
    """redis-py 8.1 on Python 3.11 sometimes ends a cancelled blocking read normally, with no reply."""
    storage = await make_storage()

    async def swallowing_xreadgroup(*args: Any, **kwargs: Any) -> list[Any]:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return []
        return []

    storage.redis.xreadgroup = swallowing_xreadgroup  # type: ignore[method-assign]
    poll = asyncio.create_task(storage.take_runnable(0.2))
    await asyncio.sleep(0.1)  # the reader is now in the blocking read
    await asyncio.wait_for(storage.close(), 2.0)  # not the 5 s last-resort wait: the reader saw it
    assert await poll is None


async def test_namespaces_keep_storages_apart(make_storage: StorageFactory) -> None:
    first, second = await make_storage(namespace="first"), await make_storage(namespace="second")
    job = await first.create_job(make_job())
    assert await second.get_job(job.id) is None
    assert await second.list_jobs(JobFilter()) == []
    assert await second.take_runnable(SHORT) is None
    assert await first.take_runnable(LONG) == job.id


async def test_every_key_is_under_the_namespace(make_storage: StorageFactory, redis_client: aioredis.Redis) -> None:
    storage = await make_storage(namespace="ns")
    worker = make_worker("a")
    await storage.save_worker(worker)
    job = await storage.create_job(make_job(client="acme"))
    first, second = make_task(job), make_task(job, worker_id=worker.worker_id)
    job = await storage.commit(Commit(job, tasks=[first, second], timers={"t": time.time() + 60}))
    await storage.add_branch_result(job.id, first.id, {})
    assert await take(storage, worker) is not None
    await finish(storage, job)
    names = {name.decode() async for name in redis_client.scan_iter()}
    assert len(names) > 10
    assert all(name.startswith("ns:") for name in names), sorted(names)


def test_key_constants_do_not_prefix_one_another() -> None:
    """A key built from one prefix can never be mistaken for a key built from another."""
    prefixes = [value for name, value in vars(keys).items() if name.isupper() and isinstance(value, str)]
    prefixes = [p for p in prefixes if p.endswith(":") and p != keys.TIMEOUT_TIMER]
    assert not [(a, b) for a in prefixes for b in prefixes if a != b and b.startswith(a)]


async def test_a_client_decoding_responses_is_refused(redis_server: RedisServer) -> None:
    client = redis_server.client(decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            RedisStorage(client)
    finally:
        await client.aclose()


def test_a_client_or_a_url_is_required() -> None:
    with pytest.raises(ValueError, match="client or a url"):
        RedisStorage()


async def test_keeps_working_across_a_redis_restart(tmp_path: Path) -> None:
    durable = ("--appendonly", "yes", "--appendfsync", "always")
    with running_redis(tmp_path, *durable) as server:
        a = RedisStorage(url=server.url, lease_s=LEASE_S, recheck_s=NO_RECHECK_S)
        b = RedisStorage(url=server.url, lease_s=LEASE_S, recheck_s=NO_RECHECK_S)
        await a.connect()
        await b.connect()
        job = await new_job(a)
    try:
        with running_redis(tmp_path, *durable):  # same directory and socket: the same Redis, restarted
            assert await b.get_job(job.id) == job
            poll = asyncio.create_task(take(a, make_worker("a"), timeout_s=10.0))
            await asyncio.sleep(0.5)  # the subscription is back after its backoff
            task = make_task(job)
            await dispatch(b, job, task)
            taken = await poll
            assert taken is not None
            assert taken.id == task.id
            created = await b.create_job(make_job())
            assert await a.take_runnable(5.0) == created.id
    finally:
        await a.close()
        await b.close()


# -- forgetting terminal jobs (as MemoryStorage does) ---------------------------------------------
async def test_max_terminal_jobs_forgets_the_oldest_with_everything_they_had(make_storage: StorageFactory) -> None:
    storage = await make_storage(max_terminal_jobs=2)
    oldest = await new_job(storage, blueprint="x")
    others = [await new_job(storage, blueprint="x") for _ in range(2)]
    queued, taken = make_task(oldest), make_task(oldest)
    oldest = await dispatch(storage, oldest, queued, taken)
    worker = make_worker("a")
    answered = await take(storage, worker)
    assert answered is not None
    await storage.add_branch_result(oldest.id, answered.id, {"x": 1})
    for job in [oldest, *others]:
        await finish(storage, job)
    assert await storage.get_job(oldest.id) is None
    assert await storage.get_task(queued.id) is None
    assert await storage.branch_results(oldest.id) == {}
    assert await storage.queue_lengths() == {}
    assert await storage.worker_load() == {}
    assert await take(storage, make_worker("a")) is None
    assert await storage.count_jobs() == {("x", "finished", "start"): 2}
    assert [job.id for job in await storage.list_jobs(JobFilter(blueprint="x"))] == [o.id for o in reversed(others)]


async def test_quarantined_and_waiting_jobs_are_never_forgotten(make_storage: StorageFactory) -> None:
    storage = await make_storage(max_terminal_jobs=2)
    quarantined, waiting, *ended = [await new_job(storage) for _ in range(6)]
    await finish(storage, quarantined, JobStatus.QUARANTINED)
    await finish(storage, waiting, JobStatus.WAITING_FOR_HUMAN)
    for job in ended:
        await finish(storage, job, JobStatus.CANCELLED)
    assert await storage.get_job(quarantined.id) is not None
    assert await storage.get_job(waiting.id) is not None
    assert [await storage.get_job(job.id) is not None for job in ended] == [False, False, True, True]


async def test_a_job_that_leaves_a_terminal_status_is_not_forgotten(make_storage: StorageFactory) -> None:
    storage = await make_storage(max_terminal_jobs=2)
    retried, first, second = [await new_job(storage) for _ in range(3)]
    retried = await finish(storage, retried, JobStatus.FAILED)
    retried.status = JobStatus.PENDING
    await storage.commit(Commit(retried, close_tasks={"none": TaskStatus.DONE}))
    await finish(storage, first)
    await finish(storage, second)
    assert await storage.get_job(retried.id) is not None
    assert await storage.get_job(first.id) is not None


# -- data an older version wrote ------------------------------------------------------------------
async def as_stored_before_2026_12_07(client: aioredis.Redis, job: Job, **fields: Any) -> None:
    """Store ``job`` as versions before 2026-12-07 did: a hash (with ``fields`` too), not a record."""
    counted = orjson.dumps([job.blueprint, str(job.status), job.state, job.client])
    stored = {"doc": named(job), "version": job.version, "commit": "x:1", "status": str(job.status)}
    stored |= {"counted": counted, **({"client": job.client} if job.client else {}), **fields}
    await client.delete(f"avtomatika:job:{job.id}")
    await client.hset(f"avtomatika:job:{job.id}", mapping=stored)


async def as_listed_before_2026_12(client: aioredis.Redis, job: Job, seq: int) -> None:
    """List ``job`` as versions before 2026-12 did: by a creation sequence, by blueprint and state too."""
    await as_stored_before_2026_12_07(client, job, seq=seq, blueprint=job.blueprint, state=job.state)
    await client.zadd("avtomatika:jobs:all", {job.id: seq})
    for field, value in (("status", job.status), ("blueprint", job.blueprint), ("state", job.state)):
        await client.zadd(f"avtomatika:jobs:by:{field}:{value}", {job.id: seq})


async def jobs_listed(client: aioredis.Redis) -> dict[str, list[bytes]]:
    found = {}
    for name in [key.decode() async for key in client.scan_iter("avtomatika:jobs:*")]:
        if name.startswith(("avtomatika:jobs:by:", "avtomatika:jobs:all")):
            found[name.removeprefix("avtomatika:jobs:")] = await client.zrange(name, 0, -1)
    return found


async def test_a_job_listed_by_an_older_version_is_listed_anew_when_next_stored(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    storage = await make_storage()
    old, new = await new_job(storage, blueprint="x"), await new_job(storage, blueprint="x")
    await as_listed_before_2026_12(redis_client, old, seq=1)
    assert [job.id for job in await storage.list_jobs(JobFilter(blueprint="x"))] == [new.id, old.id]
    old.state = "next"
    old = await finish(storage, old, JobStatus.WAITING_FOR_HUMAN)
    assert [job.id for job in await storage.list_jobs(JobFilter(state="next"))] == [old.id]
    assert [job.id for job in await storage.list_jobs(JobFilter())] == [new.id, old.id]  # by created_at now
    assert await jobs_listed(redis_client) == {
        "by:status:pending": [new.id.encode()],
        "by:status:waiting_for_human": [old.id.encode()],
    }
    assert await redis_client.type(f"avtomatika:job:{old.id}") == b"string"  # a record now


async def test_a_job_stored_as_a_hash_by_an_older_version_is_read_and_stored_as_a_record(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """Versions before 2026-12-07 kept a job as a hash; it is read as one until stored again, which
    writes its record (with the tasks its hash listed), and forgotten with its tasks either way."""
    storage = await make_storage(max_terminal_jobs=1)
    job = await new_job(storage)
    task = make_task(job)
    job = await storage.commit(Commit(job, tasks=[task]))
    await as_stored_before_2026_12_07(redis_client, job, **{f"{keys.JOB_TASK}{task.id}": ""})
    assert await storage.get_job(job.id) == job
    assert await storage.job_version(job.id) == job.version
    assert [found.id for found in await storage.list_jobs(JobFilter())] == [job.id]
    assert (await storage.lease_and_get_job(job.id, "stepper")).job == job
    await storage.release_job_lease(job.id, "stepper")
    job.state = "next"
    job = await storage.commit(Commit(job))
    assert await redis_client.type(storage.keys.job(job.id)) == b"string"
    assert await storage.get_job(job.id) == job
    assert await storage.count_jobs() == {(job.blueprint, str(job.status), "next"): 1}
    await finish(storage, job)
    await finish(storage, await new_job(storage))  # past max_terminal_jobs: the first is forgotten
    assert await storage.get_job(job.id) is None
    assert await storage.get_task(task.id) is None


async def test_a_new_task_is_stored_without_being_read_first(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """Its job's record does not list it: new. One it lists is read (a GET more than the job's own),
    and replaced as it was."""
    storage = await make_storage()
    job = await new_job(storage)
    task = make_task(job, worker_id="w-1")
    await redis_client.config_resetstat()
    job = await dispatch(storage, job, task)
    new = await _gets(redis_client)
    await redis_client.config_resetstat()
    await _given_to_anyone(storage, job, task)
    assert await _gets(redis_client) == new + 1


async def _gets(client: aioredis.Redis) -> int:
    """GET commands since the last CONFIG RESETSTAT."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def _a_task_of_w1(make_storage: StorageFactory) -> tuple[RedisStorage, Job, Task]:
    """A new job, with its task dispatched to worker w-1."""
    storage = await make_storage()
    job = await new_job(storage)
    task = make_task(job, worker_id="w-1")
    return storage, await dispatch(storage, job, task), task


async def _given_to_anyone(storage: RedisStorage, job: Job, task: Task) -> Job:
    """``task`` (w-1's) stored again for anyone: queued under its type, on no worker's load."""
    task.worker_id = None
    job = await dispatch(storage, job, task)
    assert nonzero(await storage.worker_load()) == {}
    assert nonzero(await storage.queue_lengths()) == {"a": 1}
    return job


async def test_a_task_a_hash_stored_job_listed_in_a_set_is_read_before_it_is_stored_again(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """Versions before JOB_TASK fields listed a job's tasks in a JOB_TASKS set: its record lists them too."""
    storage, job, task = await _a_task_of_w1(make_storage)
    await as_stored_before_2026_12_07(redis_client, job)
    await redis_client.sadd(f"avtomatika:{keys.JOB_TASKS}{job.id}", task.id)
    job = await storage.commit(Commit(job))  # stored as a record
    await _given_to_anyone(storage, job, task)


async def test_a_hash_stored_job_is_forgotten_with_its_tasks(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    storage = await make_storage(max_terminal_jobs=1)
    job = await new_job(storage)
    task = make_task(job)
    job = await finish(storage, await storage.commit(Commit(job, tasks=[task])))
    await as_stored_before_2026_12_07(redis_client, job, **{f"{keys.JOB_TASK}{task.id}": ""})
    await finish(storage, await new_job(storage))
    assert await storage.get_job(job.id) is None
    assert await storage.get_task(task.id) is None
    assert await storage.count_jobs() == {(job.blueprint, "finished", job.state): 1}


async def test_a_job_listed_by_an_older_version_is_forgotten_from_every_list(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    storage = await make_storage(max_terminal_jobs=1)
    old = await finish(storage, await new_job(storage, blueprint="x"))
    await as_listed_before_2026_12(redis_client, old, seq=1)
    await finish(storage, await new_job(storage, blueprint="x"))
    assert await storage.get_job(old.id) is None
    listed = await jobs_listed(redis_client)
    assert old.id.encode() not in [member for members in listed.values() for member in members]


async def task_as_stored_before_2026_12_07(client: aioredis.Redis, task_key: str) -> None:
    """Store the task at ``task_key`` as versions before 2026-12-07 did: a hash of its fields, not a
    record; its document whole, its queue position as the queue's entry has it."""
    task_id = task_key.rsplit(":", 1)[1]
    stored = encoding.task_record(await client.get(task_key), task_id)
    task = encoding.decode_task(stored)
    del stored[b"id"]
    stored[b"doc"] = named(task)
    if sequence := stored.get(b"member"):
        stored[b"member"] = sequence + b":" + task_id.encode()
        inbox = f"avtomatika:inbox:{task.worker_id}"
        stored[b"qkey"] = stored.get(b"qkey") or (inbox if task.worker_id else f"avtomatika:queue:{task.type}")
    await client.delete(task_key)
    await client.hset(task_key, mapping=stored)


async def test_a_task_queued_by_an_older_version_keeps_its_place(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """Versions before 2026-12-08 began a queue member with 16 decimal digits (see keys.TASK_SEQUENCE):
    such a task is taken, first in, first out, before those queued since."""
    storage = await make_storage()
    job = await new_job(storage)
    older = make_task(job)
    job = await dispatch(storage, job, older)
    task_key, queue = storage.keys.task(older.id), storage.keys.queue("a")
    lines = (await redis_client.get(task_key)).split(b"\n")
    assert lines[5] == b"11"  # the member line (see keys.TASK): one base-62 digit, 1
    lines[5] = b"%016d" % 9_999
    await redis_client.set(task_key, b"\n".join(lines))
    await redis_client.delete(queue)
    await redis_client.zadd(queue, {lines[5] + b":" + older.id.encode(): 0.0})
    newer = [make_task(job) for _ in range(70)]  # past one base-62 digit
    await dispatch(storage, job, *newer)
    assert await storage.get_task(older.id) == older
    worker = make_worker("a")
    assert await take_ids(storage, worker, 71) == [older.id] + [task.id for task in newer]
    assert await redis_client.zcard(queue) == 0


async def test_a_task_stored_as_a_hash_by_an_older_version_is_read_and_written_as_a_record(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """Versions before 2026-12-07 kept a task as a hash; it is read as one (queued, taken, closed)
    until it is written again, as a record."""
    storage = await make_storage()
    job = await new_job(storage)
    queued, other = make_task(job, priority=1.0), make_task(job)
    job = await dispatch(storage, job, queued, other)
    for task in (queued, other):
        await task_as_stored_before_2026_12_07(redis_client, storage.keys.task(task.id))
    assert await storage.get_task(queued.id) == queued
    taken = await take(storage, make_worker("a"))
    assert taken is not None
    assert taken.id == queued.id
    assert await redis_client.type(storage.keys.task(queued.id)) == b"string"
    assert await storage.get_task(queued.id) == taken
    assert await storage.update_task(other.id, progress=0.5) == await storage.get_task(other.id)
    assert await redis_client.type(storage.keys.task(other.id)) == b"string"
    await task_as_stored_before_2026_12_07(redis_client, storage.keys.task(queued.id))
    assert await storage.add_branch_result(job.id, queued.id, {}) == BranchAnswer.RECORDED
    assert (await storage.get_task(queued.id)).status == TaskStatus.DONE
    assert nonzero(await storage.queue_lengths()) == {"a": 1}


async def test_queued_tasks_are_counted_from_their_queues_and_a_known_type_is_not_added_again(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """A queue's length is the size of its zsets (keys.TASK_TYPES): queuing and taking keep no count,
    and a commit adds a task type to the set only when its process has not lately."""
    storage = await make_storage()
    job = await new_job(storage)
    worker = make_worker("a")
    job = await dispatch(storage, job, make_task(job), make_task(job, "b", worker_id=worker.worker_id))
    assert await redis_client.smembers(storage.keys.key(keys.TASK_TYPES)) == {b"a", b"b"}
    await redis_client.config_resetstat()
    job = await dispatch(storage, job, make_task(job, "b"))
    assert nonzero(await storage.queue_lengths()) == {"a": 1, "b": 2}
    assert await take(storage, worker) is not None
    assert nonzero(await storage.queue_lengths()) == {"a": 1, "b": 1}
    assert "cmdstat_sadd" not in await redis_client.info("commandstats")
    assert not await redis_client.exists(storage.keys.key(keys.QUEUED_COUNTS))


async def test_a_task_type_set_lost_with_redis_data_is_added_again_after_the_refresh(
    make_storage: StorageFactory, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = await make_storage()
    job = await new_job(storage)
    job = await dispatch(storage, job, make_task(job))
    await redis_client.delete(storage.keys.key(keys.TASK_TYPES))
    monkeypatch.setattr(keys, "TASK_TYPES_REFRESH_S", 0.0)
    await dispatch(storage, job, make_task(job))
    assert nonzero(await storage.queue_lengths()) == {"a": 2}


async def test_tasks_queued_by_a_version_that_counted_them_are_counted_and_taken(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """Versions before 2026-12-08 kept a count per task type (keys.QUEUED_COUNTS) and no set of task
    types: their queued tasks are counted by the zsets of the types that hash names."""
    storage = await make_storage()
    job = await new_job(storage)
    worker = make_worker("a")
    job = await dispatch(storage, job, make_task(job), make_task(job, worker_id=worker.worker_id))
    await redis_client.delete(storage.keys.key(keys.TASK_TYPES))
    await redis_client.hset(storage.keys.key(keys.QUEUED_COUNTS), "a", 2)
    assert await storage.queue_lengths() == {"a": 2}
    assert await take_ids(storage, worker, 2)
    assert await storage.queue_lengths() == {}


async def test_a_task_whose_worker_changed_while_queued_is_taken_from_the_inbox_it_waits_in(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """A task's record leaves out the queue it waits in when its worker and type give it (keys.TASK):
    one whose worker changed since it was queued keeps it written."""
    storage = await make_storage()
    job = await new_job(storage)
    worker, other = make_worker("a"), make_worker("a")
    task = make_task(job, worker_id=worker.worker_id)
    await dispatch(storage, job, task)
    assert b"inbox" not in await redis_client.get(storage.keys.task(task.id))
    await storage.update_task(task.id, worker_id=other.worker_id)
    assert await take(storage, other) is None
    taken = await take(storage, worker)
    assert taken is not None
    assert taken.id == task.id
    assert nonzero(await storage.queue_lengths()) == {}


async def test_every_job_is_listed_from_the_lists_by_status_merged(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """No list of every job is kept (a ZADD per new job, ~176 bytes each): one page of every job merges
    the lists by status, newest first, at any offset."""
    storage = await make_storage()
    jobs = [await new_job(storage) for _ in range(5)]
    for job in jobs[1::2]:
        await finish(storage, job)
    assert not await redis_client.exists(storage.keys.key(keys.JOBS_ALL))
    newest_first = [job.id for job in reversed(jobs)]
    for offset in range(6):
        page = await storage.list_jobs(JobFilter(), limit=2, offset=offset)
        assert [job.id for job in page] == newest_first[offset : offset + 2]
    blueprint = await storage.list_jobs(JobFilter(blueprint=jobs[0].blueprint), limit=3, offset=1)
    assert [job.id for job in blueprint] == newest_first[1:4]


def ids(jobs: list[Job]) -> list[str]:
    return [job.id for job in jobs]


async def test_a_job_is_in_the_one_list_of_its_status_and_client(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """A sorted-set entry a job: listing by status merges the lists of the clients with jobs of it,
    listing by client its lists by status; and a job forgotten leaves its list."""
    storage = await make_storage(max_terminal_jobs=1)
    anonymous = await new_job(storage)
    first, second, third = [await new_job(storage, client="acme") for _ in range(3)]
    other = await new_job(storage, client="globex")
    await finish(storage, second)
    assert await jobs_listed(redis_client) == {
        "by:status:pending": [anonymous.id.encode()],
        "by:status:pending:client:acme": [first.id.encode(), third.id.encode()],
        "by:status:finished:client:acme": [second.id.encode()],
        "by:status:pending:client:globex": [other.id.encode()],
    }
    pending = JobFilter(status=JobStatus.PENDING)
    assert ids(await storage.list_jobs(pending)) == [other.id, third.id, first.id, anonymous.id]
    assert ids(await storage.list_jobs(pending, limit=2, offset=1)) == [third.id, first.id]
    assert ids(await storage.list_jobs(JobFilter(client="acme"))) == [third.id, second.id, first.id]
    assert ids(await storage.list_jobs(JobFilter(client="acme"), limit=1, offset=1)) == [second.id]
    assert ids(await storage.list_jobs(JobFilter(status=JobStatus.PENDING, client="acme"))) == [third.id, first.id]
    assert ids(await storage.list_jobs(JobFilter(), limit=3, offset=1)) == [third.id, second.id, first.id]
    await finish(storage, third)  # past max_terminal_jobs: second is forgotten
    assert await storage.get_job(second.id) is None
    assert "by:status:finished:client:acme" in await jobs_listed(redis_client)
    assert await redis_client.zrange(storage.keys.jobs_of("finished", "acme"), 0, -1) == [third.id.encode()]


async def test_a_job_listed_by_status_and_by_client_apart_is_listed_once_and_moved_when_next_stored(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """Versions before 2026-12-08 listed a job by status and by client: listed once in every listing
    until it is stored again, then in the list of its status and client alone; forgotten from both."""
    storage = await make_storage(max_terminal_jobs=1)
    old, new = await new_job(storage, client="acme"), await new_job(storage, client="acme")
    await as_recorded_before(redis_client, old, keys.JOB_FORMAT_ID_APART)
    await redis_client.zrem(storage.keys.jobs_of("pending", "acme"), old.id)
    for listing in (storage.keys.jobs_of("pending"), storage.keys.jobs_by_client_before("acme")):
        await redis_client.zadd(listing, {old.id: old.created_at})
    for where in (
        JobFilter(),
        JobFilter(status=JobStatus.PENDING),
        JobFilter(client="acme"),
        JobFilter(status=JobStatus.PENDING, client="acme"),
    ):
        assert ids(await storage.list_jobs(where)) == [new.id, old.id], where
    assert await storage.list_jobs(JobFilter(status=JobStatus.FINISHED, client="acme")) == []
    old = await finish(storage, old)
    assert await jobs_listed(redis_client) == {
        "by:status:pending:client:acme": [new.id.encode()],
        "by:status:finished:client:acme": [old.id.encode()],
    }
    ended = await finish(storage, await new_job(storage, client="acme"))  # forgets old (max_terminal_jobs)
    await as_recorded_before(redis_client, ended, keys.JOB_FORMAT_ID_APART)
    await redis_client.zrem(storage.keys.jobs_of("finished", "acme"), ended.id)
    for listing in (storage.keys.jobs_of("finished"), storage.keys.jobs_by_client_before("acme")):
        await redis_client.zadd(listing, {ended.id: ended.created_at})
    await finish(storage, new)  # forgets ended, listed as before
    assert await storage.get_job(ended.id) is None
    assert await jobs_listed(redis_client) == {"by:status:finished:client:acme": [new.id.encode()]}


#: What the document of a record of each earlier format leaves out.
EARLIER_FORMATS = {keys.JOB_FORMAT_WHOLE: frozenset(), keys.JOB_FORMAT_ID_APART: frozenset(("id", "status", "version"))}


async def as_recorded_before(client: aioredis.Redis, job: Job, form: str) -> None:
    """Store ``job``'s record as versions before its format did (``form``, one of EARLIER_FORMATS): no
    ``waits`` line, its blueprint, state, client and wait in its document."""
    counted = orjson.dumps([job.blueprint, str(job.status), job.state, job.client])
    lines = [form, str(job.version), "", "x:1", str(job.status), counted.decode(), ""]
    doc = named(job, EARLIER_FORMATS[form])
    await client.set(f"avtomatika:job:{job.id}", "\n".join(lines).encode() + b"\n" + doc)


@pytest.mark.parametrize("form", EARLIER_FORMATS)
async def test_a_job_recorded_by_an_older_version_is_read_and_stored_without_what_its_record_holds(
    make_storage: StorageFactory, redis_client: aioredis.Redis, form: str
) -> None:
    """Read as it is; stored again, in today's format; one listing another job's task keeps its format."""
    storage = await make_storage()
    job, other = await new_job(storage), await new_job(storage, client="acme")
    for before in (job, other):
        await as_recorded_before(redis_client, before, form)
    assert await storage.get_job(job.id) == job
    assert await storage.job_version(job.id) == job.version
    assert await storage.list_jobs(JobFilter()) == [other, job]
    assert (await storage.lease_and_get_job(job.id, "stepper")).job == job
    await storage.release_job_lease(job.id, "stepper")
    job.state = "next"
    job = await storage.commit(Commit(job, tasks=[make_task(other)]))
    assert (await redis_client.get(storage.keys.job(other.id))).startswith(f"{form}\n".encode())
    assert await storage.get_job(other.id) == other
    record = await redis_client.get(storage.keys.job(job.id))
    assert record.startswith(f"{keys.JOB_FORMAT}\n".encode())
    assert b'"id"' not in record
    assert b'"blueprint"' not in record
    assert await storage.get_job(job.id) == job
    assert (await storage.lease_and_get_job(job.id, "stepper")).job == job


def waits_line(record: bytes) -> bytes:
    """The ``waits`` line of a job's record of today's format (see ``keys.JOB``)."""
    return record.split(b"\n", 7)[6]


async def test_a_wait_on_the_tasks_a_step_dispatched_is_kept_as_their_count(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """The record lists the job's tasks already: a wait on the last of them is their count, in every
    script and read that makes the document whole (including a task of the job another commit lists)."""
    storage = await make_storage()
    job, other = await new_job(storage), await new_job(storage)
    first, second = make_task(job), make_task(job)
    job.wait = {"kind": "tasks", "task_ids": [first.id, second.id]}
    job = await dispatch(storage, job, first, second)
    record = await redis_client.get(storage.keys.job(job.id))
    assert waits_line(record) == b"2"
    assert b'"wait"' not in record
    assert await storage.get_job(job.id) == job
    assert (await storage.lease_and_get_job(job.id, "stepper")).job == job
    await storage.release_job_lease(job.id, "stepper")

    third = make_task(job)  # a step later: a wait on the newest task alone
    job.wait = {"kind": "tasks", "task_ids": [third.id]}
    job = await dispatch(storage, job, third)
    assert waits_line(await redis_client.get(storage.keys.job(job.id))) == b"1"
    assert await storage.get_job(job.id) == job

    await storage.commit(Commit(other, tasks=[make_task(job)]))  # listed in job's record by another's commit
    record = await redis_client.get(storage.keys.job(job.id))
    assert waits_line(record) == b""
    assert b'"wait"' in record
    assert await storage.get_job(job.id) == job
    assert (await storage.lease_and_get_job(job.id, "stepper")).job == job


async def test_a_wait_on_tasks_that_are_not_the_last_listed_is_kept_in_the_document(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    storage = await make_storage()
    job = await new_job(storage)
    first, second = make_task(job), make_task(job)
    job.wait = {"kind": "tasks", "task_ids": [first.id]}
    job = await dispatch(storage, job, first, second)
    record = await redis_client.get(storage.keys.job(job.id))
    assert waits_line(record) == b""
    assert first.id.encode() in record.split(b"\n", 7)[7]
    assert await storage.get_job(job.id) == job
    job.wait = {"kind": "tasks", "task_ids": [first.id], "any": True}  # not on tasks alone: as it is
    job = await storage.commit(Commit(job))
    assert waits_line(await redis_client.get(storage.keys.job(job.id))) == b""
    assert await storage.get_job(job.id) == job


async def test_a_job_whose_blueprint_name_looks_like_its_counted_line_is_read_with_its_own_status(
    make_storage: StorageFactory, redis_client: aioredis.Redis
) -> None:
    """The scripts read a job's status from its counted line (see keys.JOB), past its blueprint's name."""
    storage = await make_storage()
    job = await new_job(storage, blueprint='odd ","pending", [name]')
    job.status = JobStatus.WAITING_FOR_HUMAN
    job = await storage.commit(Commit(job))
    assert (await storage.lease_and_get_job(job.id, "stepper")).job == job
    await storage.release_job_lease(job.id, "stepper")
    job = await finish(storage, job)
    assert await jobs_listed(redis_client) == {"by:status:finished": [job.id.encode()]}
    assert await storage.get_job(job.id) == job
