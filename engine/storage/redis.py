"""Live state in Redis, shared by several engine processes.

Every change is one Lua script (:mod:`.redis_scripts`), so it lands whole or not at all, whichever
process makes it. Records are orjson documents, the same dicts as ``to_dict()``; key names are in
:mod:`avtomatika.keys`.

What each process adds on top of the scripts:

- one reader of the runnable stream for all its ``take_runnable`` callers (a consumer group, so each
  entry goes to one process; entries are acknowledged by ``ack_runnable``, renewed while held, and
  taken over by another process when a holder stops renewing for ``lease_s``);
- one pub/sub subscription that wakes its long-polling ``take_task`` callers when any process queues
  a task of a type they wait for, with a periodic re-check in case a notification is lost.

Calls that claim something (a task, due timers, expired workers) stay right when redis-py retries them
after a lost reply: a retried commit or claim is recognised and answered as the first one was.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import socket
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeAlias, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import RedisError, ResponseError

from .. import keys
from ..errors import VersionConflict
from ..keys import Keys
from ..models import TERMINAL_STATUSES, Job, Task, WorkerRecord, now
from .base import Commit, JobFilter, Storage
from .redis_scripts import SOURCES

logger = logging.getLogger(__name__)

#: Queue entries read at a time when looking for a task a worker is eligible for.
SCAN_PAGE = 16
#: Candidates one take offers the claim script, best first (it takes the first still queued).
CLAIM_BATCH = 16
#: Jobs read at a time when a list has to be filtered on more than one field.
LIST_PAGE = 100
#: Connections of a pool built from a url; callers past it wait for one (see ``pool_timeout_s``).
DEFAULT_MAX_CONNECTIONS = 64
#: Retries of a call that could not reach Redis, 0.05 s apart at first, then 0.5 to 1 s: a call rides
#: out a Redis restart of at least 14 s (a commit whose reply was lost is recognised when retried).
RETRIES = 30
#: Longest :meth:`RedisStorage.ping` waits (the health check): shorter than the retries of other calls.
PING_TIMEOUT_S = 2.0
#: Task fields that name the task; ``update_task`` does not change them.
_IDENTITY = frozenset({"id", "job_id", "type"})
_TASK_FIELDS = frozenset(f.name for f in fields(Task))
_INDEXED = ("status", "blueprint", "state", "client")
#: What redis-py's types say a reply holds (always bytes here: the client has decode_responses=False).
Raw: TypeAlias = bytes | str


class RedisUnavailable(ConnectionError):
    """Redis did not answer (the health check names it)."""


class RedisStorage(Storage):
    """Live state in Redis; any number of engine processes may share one.

    Args:
        redis_client: A ``redis.asyncio.Redis`` (with ``decode_responses=False``), owned by the caller.
            Give it a ``BlockingConnectionPool``, or the pool raises past its size under load.
        url: Instead of a client, a ``redis://`` / ``rediss://`` / ``unix://`` URL: the storage builds a
            client on a ``BlockingConnectionPool`` (callers wait for a free connection) and closes it.
        lease_s: How long a job taken to be stepped stays with a process that stopped renewing its
            lease (it died, or its loop is stuck) before another process takes it over; also the
            length of a job's step lease (:meth:`lease_job`). Both are renewed every third of it.
        consumer: This process's name in the runnable stream's consumer group; unique by default.
        namespace: Prefix of every key (see :mod:`avtomatika.keys`); tests and apps can share a Redis.
        max_connections: Size of the pool built from ``url``.
        pool_timeout_s: How long a call waits for a connection of that pool before failing.
        recheck_s: Longest a long poll waits before looking at the queues again without a notification.
        max_terminal_jobs: Finished, failed and cancelled jobs kept; the oldest are forgotten past it.
    """

    def __init__(
        self,
        redis_client: aioredis.Redis | None = None,
        *,
        url: str | None = None,
        lease_s: float = 30,
        consumer: str | None = None,
        namespace: str = keys.DEFAULT_NAMESPACE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout_s: float = 30.0,
        recheck_s: float = 1.0,
        max_terminal_jobs: int = 100_000,
    ) -> None:
        if (redis_client is None) == (url is None):
            raise ValueError("RedisStorage needs a redis client or a url (one of them)")
        if redis_client is None:
            assert url is not None
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=pool_timeout_s,
                retry=Retry(EqualJitterBackoff(cap=1.0, base=0.05), retries=RETRIES),
            )
            redis_client = aioredis.Redis.from_pool(pool)
            self._owns_client = True
        else:
            self._owns_client = False
        if redis_client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisStorage needs a client with decode_responses=False (records are bytes)")
        self.redis = redis_client
        self.keys = Keys(namespace)
        self.lease_s = lease_s
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.recheck_s = recheck_s
        self.max_terminal_jobs = max_terminal_jobs
        self._scripts = {name: redis_client.register_script(source) for name, source in SOURCES.items()}
        self._tokens = map(f"{uuid.uuid4().hex}:{{}}".format, itertools.count())  # one per call, unique
        self._runnable = _RunnableReader(self)
        self._wakeups = _TaskWakeups(self)

    # -- lifecycle -------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Check the connection, load the scripts, create the consumer group, subscribe to wake-ups."""
        await self.ping()
        for script in self._scripts.values():
            await self.redis.script_load(script.script)
        await self._runnable.create_group()
        await self._wakeups.start()

    async def close(self) -> None:
        """Stop this process's reader and subscription; close the client if it was built here."""
        await self._runnable.stop()
        await self._wakeups.stop()
        if self._owns_client:
            await self.redis.aclose()

    async def ping(self) -> None:
        """Raise, naming Redis, if it does not answer within ``PING_TIMEOUT_S`` (retries included)."""
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self.redis.ping()
        except TimeoutError:
            raise RedisUnavailable(f"Redis at {self._where()} did not answer within {PING_TIMEOUT_S:g} s") from None
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"Redis at {self._where()} unreachable: {exc}") from exc

    def _where(self) -> str:
        kwargs = self.redis.connection_pool.connection_kwargs
        if kwargs.get("path"):
            return f"unix://{kwargs['path']}"
        return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

    def event_transport(self) -> RedisEvents:
        """Events go to every engine process sharing this Redis by pub/sub (see :class:`RedisEvents`)."""
        return RedisEvents(self.redis, self.keys.key(keys.EVENTS))

    def worker_command_transport(self) -> RedisEvents:
        """Commands for workers go to every engine process by pub/sub, each delivering to its sockets."""
        return RedisEvents(self.redis, self.keys.key(keys.WORKER_COMMANDS))

    async def _run(self, script: str, keys: Iterable[str], args: Iterable[Any]) -> Any:
        return await self._scripts[script](keys=list(keys), args=[self.keys.prefix, *args])

    # -- jobs ------------------------------------------------------------------------------------
    async def create_job(self, job: Job, *, run: bool = True) -> Job:
        job.version = 1
        args = [self.max_terminal_jobs, _flag(run), *_job_fields(job, next(self._tokens))]
        await self._run("create_job", [self.keys.job(job.id)], args)
        return job

    async def get_job(self, job_id: str) -> Job | None:
        raw = await self.redis.hget(self.keys.job(job_id), "doc")
        return _job(raw) if raw is not None else None

    async def commit(self, change: Commit) -> Job:
        job = change.job
        expected, updated_at = job.version, job.updated_at
        job.version, job.updated_at = expected + 1, now()
        args: list[Any] = [expected, self.max_terminal_jobs, _flag(change.run), _flag(change.clear_branches)]
        args += _job_fields(job, next(self._tokens))
        args += [len(change.close_tasks), *(x for item in change.close_tasks.items() for x in item)]
        args += [len(change.tasks), *(x for task in change.tasks for x in _task_fields(task))]
        args += [len(change.cancel_timers), *change.cancel_timers]
        args += [len(change.timers), *(x for timer_id, due in change.timers.items() for x in (timer_id, _score(due)))]
        try:
            applied = await self._run("commit", [self.keys.job(job.id)], args)
        except BaseException:
            job.version, job.updated_at = expected, updated_at
            raise
        if not applied:
            job.version, job.updated_at = expected, updated_at
            raise VersionConflict(job.id)
        return job

    async def list_jobs(self, where: JobFilter, limit: int = 50, offset: int = 0) -> list[Job]:
        if limit <= 0:
            return []
        wanted = {name: value for name in _INDEXED if (value := getattr(where, name))}
        index = await self._smallest_index(wanted)
        # One field: every job in its index matches (bar a commit in between), so seek to the offset.
        start, skip = (offset, 0) if len(wanted) <= 1 else (0, offset)
        page = limit if len(wanted) <= 1 else max(LIST_PAGE, limit)
        found: list[Job] = []
        while len(found) < limit:
            ids = cast(list[Raw], await self.redis.zrevrange(index, start, start + page - 1))
            if not ids:
                break
            start += len(ids)
            for job in await self._read_jobs(ids):
                if job is None or any(getattr(job, name) != value for name, value in wanted.items()):
                    continue
                if skip:
                    skip -= 1
                elif len(found) < limit:
                    found.append(job)
        return found

    async def _smallest_index(self, wanted: dict[str, str]) -> str:
        if not wanted:
            return self.keys.key(keys.JOBS_ALL)
        candidates = [self.keys.jobs_by(name, value) for name, value in wanted.items()]
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in candidates:
                pipe.zcard(index)
            sizes = await pipe.execute()
        return min(zip(sizes, candidates, strict=True))[1]

    async def _read_jobs(self, job_ids: Iterable[Raw]) -> list[Job | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.keys.job(_text(job_id)), "doc")
            docs = await pipe.execute()
        return [_job(doc) if doc is not None else None for doc in docs]

    async def count_jobs(self) -> dict[tuple[str, str, str], int]:
        counts = await self.redis.hgetall(self.keys.key(keys.JOB_COUNTS))
        return {tuple(orjson.loads(field)): int(n) for field, n in counts.items() if int(n) > 0}

    # -- runnable queue --------------------------------------------------------------------------
    async def take_runnable(self, timeout_s: float) -> str | None:
        return await self._runnable.take(timeout_s)

    async def ack_runnable(self, job_id: str) -> None:
        await self._runnable.ack(job_id)

    # -- step leases -----------------------------------------------------------------------------
    async def lease_job(self, job_id: str, holder: str, lease_s: float | None = None) -> bool:
        """SET NX PX; renewed every third of ``lease_s`` by this process's lease renewer until released."""
        # Never shorter than ``self.lease_s``: held leases are renewed every third of that.
        lease_s = self.lease_s if lease_s is None else max(lease_s, self.lease_s)
        key = self.keys.step_lease(job_id)
        taken = await self.redis.set(key, holder, nx=True, px=max(1, int(lease_s * 1000)))
        if not taken:
            # A retried SET whose first attempt succeeded answers "not set": the holder tells.
            current = await self.redis.get(key)
            taken = current is not None and _text(current) == holder
        if taken:
            self._runnable.hold_step_lease(job_id, holder, lease_s)
        return bool(taken)

    async def release_job_lease(self, job_id: str, holder: str) -> None:
        self._runnable.drop_step_lease(job_id, holder)
        await self._scripts["release_step_lease"](keys=[self.keys.step_lease(job_id)], args=[holder])

    # -- tasks -----------------------------------------------------------------------------------
    async def get_task(self, task_id: str) -> Task | None:
        stored = await self.redis.hgetall(self.keys.task(task_id))
        return _task(stored) if stored else None

    async def update_task(self, task_id: str, **changes: Any) -> Task | None:
        args: list[Any] = []
        for name, value in changes.items():
            if name not in _TASK_FIELDS or name in _IDENTITY:
                raise AttributeError(f"update_task cannot change {name!r} of a task")
            if name in ("status", "worker_id"):
                args += [name, str(value) if value else ""]
            else:
                args += [name, orjson.dumps(value)]
        reply = await self._run("update_task", [self.keys.task(task_id)], args)
        return _task(_pairs(reply)) if reply else None

    async def take_task(
        self,
        worker: WorkerRecord,
        timeout_s: float,
        deadline_for: Callable[[Task], float],
        eligible: Callable[[Task], bool],
    ) -> Task | None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout_s
        topics = [f"w:{worker.worker_id}".encode(), *(f"t:{t}".encode() for t in worker.supported_tasks)]
        cancellations = _cancellations()
        await self._wakeups.start()
        woken: _Waiter | None = None  # chosen for a notification, not yet looked at the queues since
        try:
            while True:
                _stop_if_cancelled(cancellations)
                with self._wakeups.waiting(topics) as waiter:  # before looking, so no wake-up falls between
                    task = await self._take_now(worker, deadline_for, eligible)
                    if task is not None:
                        return task
                    if woken is not None:
                        passed, woken = woken, None
                        self._wakeups.pass_on(passed)  # woken for a task we could not take: others may
                    remaining = give_up_at - loop.time()
                    if remaining <= 0:
                        return None
                    try:
                        async with asyncio.timeout(min(remaining, self.recheck_s)):
                            await waiter.event.wait()
                    except TimeoutError:
                        pass
                    finally:
                        woken = waiter if waiter.chosen else None
        except BaseException:
            if woken is not None:  # chosen, then cancelled (the worker hung up) before looking
                self._wakeups.pass_on(woken)
            raise

    async def _take_now(
        self, worker: WorkerRecord, deadline_for: Callable[[Task], float], eligible: Callable[[Task], bool]
    ) -> Task | None:
        """Take the worker's best task now, or None; a batch lost whole to other takers is read again."""
        inbox = self.keys.inbox(worker.worker_id)
        queues = [self.keys.queue(task_type) for task_type in dict.fromkeys(worker.supported_tasks)]
        while True:
            async with self.redis.pipeline(transaction=False) as pipe:
                for queue in (inbox, *queues):
                    pipe.zrange(queue, 0, SCAN_PAGE - 1, withscores=True)
                first_pages = await pipe.execute()
            candidates = await self._candidates([inbox], first_pages[:1], _anything)
            if not candidates:
                candidates = await self._candidates(queues, first_pages[1:], eligible)
            if not candidates:
                candidates = await self._left_by_others(worker, eligible)
            if not candidates:
                return None
            task = await self._claim(candidates, worker.worker_id, deadline_for)
            if task is not None:
                return task

    async def _candidates(
        self, queues: list[str], pages: list[list[tuple[bytes, float]]], eligible: Callable[[Task], bool]
    ) -> list[_Candidate]:
        """The queued tasks ``eligible`` in ``queues``, best first, that no unread entry can precede.

        Queues whose first page holds nothing eligible are read further, so the best one is always
        found. The claim takes the first of these still queued: concurrent takers, holding the same
        list, each get the next one instead of all racing for the head.
        """
        found: list[_Candidate] = []
        cutoffs: list[tuple[float, bytes]] = []  # the last entry read of queues that may hold more
        offset = 0
        pending = [(queue, page) for queue, page in zip(queues, pages, strict=True) if page]
        while pending:
            tasks = iter(await self._read_tasks([_member_task_id(m) for _, page in pending for m, _ in page]))
            further = []
            for queue, page in pending:
                read = [(member, score, next(tasks)) for member, score in page]
                here = [
                    _Candidate(score, member, queue, task) for member, score, task in read if task and eligible(task)
                ]
                found += here
                if len(page) < SCAN_PAGE:
                    continue
                if here:
                    cutoffs.append((page[-1][1], page[-1][0]))
                else:
                    further.append(queue)
            offset += SCAN_PAGE
            async with self.redis.pipeline(transaction=False) as pipe:
                for queue in further:
                    pipe.zrange(queue, offset, offset + SCAN_PAGE - 1, withscores=True)
                pages = await pipe.execute() if further else []
            pending = [(queue, page) for queue, page in zip(further, pages, strict=True) if page]
        found.sort(key=lambda candidate: (candidate.score, candidate.member))
        if cutoffs:
            last = min(cutoffs)
            found = [candidate for candidate in found if (candidate.score, candidate.member) <= last]
        return found[:CLAIM_BATCH]

    async def _left_by_others(self, worker: WorkerRecord, eligible: Callable[[Task], bool]) -> list[_Candidate]:
        """Tasks waiting longer than ``steal_after_s`` in other workers' inboxes that this one can run."""
        cutoff = _score(now() - self.steal_after_s)
        found: list[_Candidate] = []
        for task_type in dict.fromkeys(worker.supported_tasks):
            inboxed, offset = self.keys.key(keys.INBOXED, task_type), 0
            while True:
                task_ids = cast(list[Raw], await self.redis.zrangebyscore(inboxed, "-inf", cutoff, offset, SCAN_PAGE))
                for stored in await self._read_hashes([_text(task_id) for task_id in task_ids]):
                    if not stored or b"member" not in stored:
                        continue
                    task = _task(stored)
                    if task.worker_id != worker.worker_id and eligible(task):
                        found.append(_Candidate(task.queued_at, stored[b"member"], _text(stored[b"qkey"]), task))
                if found or len(task_ids) < SCAN_PAGE:
                    break
                offset += SCAN_PAGE
        found.sort(key=lambda candidate: candidate.score)  # the longest waiting first
        return found[:CLAIM_BATCH]

    async def _read_tasks(self, task_ids: list[str]) -> list[Task | None]:
        return [_task(stored) if stored else None for stored in await self._read_hashes(task_ids)]

    async def _read_hashes(self, task_ids: list[str]) -> list[dict[Raw, Raw]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(self.keys.task(task_id))
            return cast(list[dict[Raw, Raw]], await pipe.execute())

    async def _claim(
        self, candidates: list[_Candidate], worker_id: str, deadline_for: Callable[[Task], float]
    ) -> Task | None:
        args: list[Any] = [worker_id, orjson.dumps(now())]
        for candidate in candidates:
            deadline = deadline_for(candidate.task)
            args += [candidate.queue, candidate.member, candidate.task.id, orjson.dumps(deadline), _score(deadline)]
        reply = await self._run("claim_task", [], args)
        return _task(_pairs(reply)) if reply else None

    async def queue_lengths(self) -> dict[str, int]:
        return _counts(await self.redis.hgetall(self.keys.key(keys.QUEUED_COUNTS)))

    async def worker_load(self) -> dict[str, int]:
        return _counts(await self.redis.hgetall(self.keys.key(keys.LOAD_COUNTS)))

    # -- fan-in ----------------------------------------------------------------------------------
    async def add_branch_result(self, job_id: str, task_id: str, result: dict[str, Any]) -> int:
        branches = self.keys.branches(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(branches, task_id, orjson.dumps(result))
            pipe.hlen(branches)
            _, reported = await pipe.execute()
        return int(reported)

    async def branch_results(self, job_id: str) -> dict[str, dict[str, Any]]:
        stored = await self.redis.hgetall(self.keys.branches(job_id))
        return {_text(task_id): orjson.loads(result) for task_id, result in stored.items()}

    # -- timers ----------------------------------------------------------------------------------
    async def pop_due_timers(self, at: float, limit: int = 100) -> list[str]:
        reply = await self._run("pop_due_timers", [], [_score(at), limit, next(self._tokens)])
        return [_text(timer_id) for timer_id in reply]

    async def next_timer_at(self) -> float | None:
        first = await self.redis.zrange(self.keys.key(keys.TIMERS), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    # -- workers ---------------------------------------------------------------------------------
    async def save_worker(self, record: WorkerRecord) -> None:
        args = [record.worker_id, orjson.dumps(record), _score(record.expires_at)]
        await self._run("save_worker", [], args)

    async def get_worker(self, worker_id: str) -> WorkerRecord | None:
        raw = await self.redis.get(self.keys.worker(worker_id))
        return _worker(raw) if raw is not None else None

    async def list_workers(self) -> list[WorkerRecord]:
        worker_ids = cast(list[Raw], await self.redis.zrange(self.keys.key(keys.WORKERS), 0, -1))
        if not worker_ids:
            return []
        docs = await self.redis.mget([self.keys.worker(_text(worker_id)) for worker_id in worker_ids])
        return [_worker(doc) for doc in docs if doc is not None]

    async def pop_expired_workers(self, at: float) -> list[tuple[WorkerRecord, list[str]]]:
        reply = iter(await self._run("pop_expired_workers", [], [_score(at), next(self._tokens)]))
        expired = []
        for doc in reply:
            task_ids = [_text(next(reply)) for _ in range(int(next(reply)))]
            expired.append((_worker(doc), sorted(task_ids)))
        return expired


@dataclass(slots=True)
class _Candidate:
    """A queued task a worker could take: where its entry is, and the task as read."""

    score: float
    member: Raw
    queue: str
    task: Task


class _RunnableReader:
    """This process's side of the runnable stream: one reader for all ``take_runnable`` callers.

    Callers wait on futures; the reader asks the consumer group for as many entries as there are
    callers waiting (so no connection is held per caller), first taking over entries that other
    consumers left idle past the lease. Entries read and not yet acknowledged are renewed every third
    of the lease, which is what tells the other processes that this one is alive.
    """

    def __init__(self, storage: RedisStorage) -> None:
        self.storage = storage
        self.stream = storage.keys.key(keys.RUNNABLE)
        self.claim_every_s = max(0.05, min(storage.lease_s / 2, 5.0))
        self._takers: deque[asyncio.Future[tuple[bytes, str]]] = deque()
        self._ready: deque[tuple[bytes, str]] = deque()  # read, not handed out yet
        self._held: dict[bytes, str] = {}  # entry id -> job id: read and not acknowledged
        self._step_leases: dict[str, tuple[str, float]] = {}  # job id -> (holder, lease_s): held here
        self._taken: dict[str, deque[bytes]] = {}  # job id -> entry ids handed out
        self._wanted = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._claim_cursor: bytes | str = "0-0"
        self._next_claim_at = 0.0

    async def create_group(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self.storage.redis.xgroup_create(self.stream, keys.RUNNABLE_GROUP, id="0", mkstream=True)

    async def take(self, timeout_s: float) -> str | None:
        self._start()
        if self._ready:
            return self._hand_out(*self._ready.popleft())
        taker: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()
        self._takers.append(taker)
        self._wanted.set()
        try:
            await asyncio.wait([taker], timeout=max(0.0, timeout_s))
        except asyncio.CancelledError:
            if taker.done() and not taker.cancelled():
                self._ready.appendleft(taker.result())  # handed to us as we were cancelled: keep it
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._takers.remove(taker)
        if not taker.done() or taker.cancelled():
            taker.cancel()
            return None
        return self._hand_out(*taker.result())

    def _hand_out(self, entry_id: bytes, job_id: str) -> str:
        self._taken.setdefault(job_id, deque()).append(entry_id)
        return job_id

    async def ack(self, job_id: str) -> None:
        entries = self._taken.get(job_id)
        if not entries:
            return
        entry_id = entries.popleft()
        if not entries:
            del self._taken[job_id]
        try:
            async with self.storage.redis.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, keys.RUNNABLE_GROUP, entry_id)
                pipe.xdel(self.stream, entry_id)
                await pipe.execute()
        except BaseException:  # still held (and renewed): acknowledged when the caller tries again
            self._taken.setdefault(job_id, deque()).appendleft(entry_id)
            raise
        self._held.pop(entry_id, None)

    def _start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._read_forever(), name="avtomatika-redis-runnable"),
                asyncio.create_task(self._renew_forever(), name="avtomatika-redis-leases"),
            ]

    async def stop(self) -> None:
        """Stop reading; entries read but never handed out go back to the stream at once."""
        workers, self._workers = self._workers, []
        await _cancel_and_wait(workers)
        for taker in self._takers:
            taker.cancel()
        unread = [entry_id for entry_id, _ in self._ready]
        self._ready.clear()
        if unread:
            try:
                await self.storage._scripts["release_entries"](
                    keys=[self.stream], args=[keys.RUNNABLE_GROUP, self.storage.consumer, *unread]
                )
            except (RedisError, OSError):
                logger.warning("could not put back %d runnable entries; taken over after the lease", len(unread))

    async def _read_forever(self) -> None:
        backoff = _Backoff()
        while True:
            _stop_if_cancelled()
            await self._wanted.wait()
            wanted = sum(1 for taker in self._takers if not taker.done())
            if not wanted:
                self._wanted.clear()
                continue
            try:
                entries = await self._read(wanted)
            except (RedisError, OSError) as error:  # never let the reader die: the takers depend on it
                _stop_if_cancelled()
                if isinstance(error, ResponseError) and "NOGROUP" in str(error):
                    with contextlib.suppress(RedisError, OSError):
                        await self.create_group()  # the stream was deleted (FLUSHDB, a Redis without persistence)
                        continue
                logger.warning("reading runnable jobs failed (%s); retrying", error)
                await backoff.sleep()
                continue
            backoff.reset()
            for entry_id, job_id in entries:  # kept even if we stop now: renewed, or released by stop()
                self._held[entry_id] = job_id
                taker = next((t for t in self._takers if not t.done()), None)
                if taker is not None:
                    taker.set_result((entry_id, job_id))
                else:
                    self._ready.append((entry_id, job_id))

    async def _read(self, count: int) -> list[tuple[bytes, str]]:
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_claim_at:
            self._next_claim_at = loop.time() + self.claim_every_s
            entries = await self._take_over(count)
            if entries:
                return entries
        reply = await self.storage.redis.xreadgroup(
            keys.RUNNABLE_GROUP,
            self.storage.consumer,
            {self.stream: ">"},
            count=count,
            block=max(1, int(self.claim_every_s * 1000)),
        )
        streams = reply.values() if isinstance(reply, dict) else [entries for _, entries in reply or ()]
        return [(entry_id, data[b"job"].decode()) for entries in streams for entry_id, data in _flat(entries)]

    async def _take_over(self, count: int) -> list[tuple[bytes, str]]:
        """Claim entries idle past the lease: their process died or stopped renewing."""
        reply = await self.storage.redis.xautoclaim(
            self.stream,
            keys.RUNNABLE_GROUP,
            self.storage.consumer,
            min_idle_time=int(self.storage.lease_s * 1000),
            start_id=self._claim_cursor,
            count=count,
        )
        self._claim_cursor = reply[0]
        entries, deleted = [], []
        for entry_id, data in reply[1]:
            if data:
                entries.append((entry_id, data[b"job"].decode()))
            else:
                deleted.append(entry_id)  # Redis 6.2 reports deleted entries this way
        if deleted:
            await self.storage.redis.xack(self.stream, keys.RUNNABLE_GROUP, *deleted)
        for _, job_id in entries:
            logger.warning("took over job %s from a process whose lease expired", job_id)
        return entries

    def hold_step_lease(self, job_id: str, holder: str, lease_s: float) -> None:
        self._start()
        self._step_leases[job_id] = (holder, lease_s)

    def drop_step_lease(self, job_id: str, holder: str) -> None:
        if self._step_leases.get(job_id, ("", 0.0))[0] == holder:
            del self._step_leases[job_id]

    async def _renew_step_leases(self) -> None:
        """Extend the step leases held here; one script per lease length (there is usually one)."""
        by_length: dict[float, list[tuple[str, str]]] = {}
        for job_id, (holder, lease_s) in self._step_leases.items():
            by_length.setdefault(lease_s, []).append((job_id, holder))
        for lease_s, held in by_length.items():
            lost = await self.storage._scripts["renew_step_leases"](
                keys=[self.storage.keys.step_lease(job_id) for job_id, _ in held],
                args=[max(1, int(lease_s * 1000)), *(holder for _, holder in held)],
            )
            for position in lost:
                job_id, holder = held[int(position) - 1]
                self.drop_step_lease(job_id, holder)
                logger.warning("lost the step lease on job %s (it expired): its commit is version-checked", job_id)

    async def _renew_forever(self) -> None:
        while True:
            _stop_if_cancelled()
            await asyncio.sleep(self.storage.lease_s / 3)
            if self._step_leases:
                try:
                    await self._renew_step_leases()
                except (RedisError, OSError) as error:
                    _stop_if_cancelled()
                    logger.warning("renewing step leases failed (%s)", error)
            if not self._held:
                continue
            try:
                lost = await self.storage._scripts["renew_leases"](
                    keys=[self.stream], args=[keys.RUNNABLE_GROUP, self.storage.consumer, *self._held]
                )
            except (RedisError, OSError) as error:
                _stop_if_cancelled()
                logger.warning("renewing runnable leases failed (%s)", error)
                continue
            for entry_id in lost:
                job_id = self._held.pop(entry_id, None)
                logger.warning("lost the lease on job %s to another process", job_id)
            if lost:
                gone = set(lost)
                self._ready = deque(entry for entry in self._ready if entry[0] not in gone)


@dataclass(eq=False, slots=True)
class _Waiter:
    """One long poll waiting in this process."""

    topics: list[bytes]
    event: asyncio.Event
    #: Woken alone for one queued task (rather than with everyone): passes it on if it cannot take it.
    chosen: bool = False
    topic: bytes = b""


class _TaskWakeups:
    """Wakes this process's long polls when any process queues a task they may take.

    One pub/sub subscription per process; each poll registers the topics it cares about
    (``t:<type>`` for its worker's task types, ``w:<worker id>`` for its inbox). A notification
    (one queued task) wakes one poll, in turn; if that one cannot take it (not eligible, or taken
    meanwhile elsewhere), it wakes the others once (:meth:`pass_on`), rather than every poll of the
    process reading the queues for every task.
    """

    def __init__(self, storage: RedisStorage) -> None:
        self.storage = storage
        self._waiters: dict[bytes, dict[_Waiter, None]] = {}  # insertion order: who is woken next
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe (once); waits briefly for the subscription so a task queued after is not missed."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="avtomatika-redis-wakeups")
        if not self._subscribed.is_set():
            with contextlib.suppress(TimeoutError):  # Redis down: polls fall back to re-checking
                async with asyncio.timeout(self.storage.recheck_s):
                    await self._subscribed.wait()

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await _cancel_and_wait([listener])
        self._subscribed.clear()

    @contextlib.contextmanager
    def waiting(self, topics: list[bytes]) -> Iterator[_Waiter]:
        waiter = _Waiter(topics, asyncio.Event())
        for topic in topics:
            self._waiters.setdefault(topic, {})[waiter] = None
        try:
            yield waiter
        finally:
            for topic in topics:
                waiters = self._waiters.get(topic)
                if waiters is not None:
                    waiters.pop(waiter, None)
                    if not waiters:
                        del self._waiters[topic]

    def _wake_one(self, topic: bytes) -> None:
        waiters = self._waiters.get(topic, {})
        for waiter in waiters:
            if not waiter.event.is_set():
                waiter.chosen, waiter.topic = True, topic
                waiter.event.set()
                del waiters[waiter]  # to the back of the line for this topic
                waiters[waiter] = None
                return

    def _wake_all(self, topics: Iterable[bytes]) -> None:
        for topic in topics:
            for waiter in self._waiters.get(topic, {}):
                waiter.event.set()

    def pass_on(self, woken: _Waiter) -> None:
        """``woken`` was chosen for a task it did not take: wake every other poll for that topic."""
        self._wake_all([woken.topic])

    async def _listen(self) -> None:
        channel = self.storage.keys.key(keys.TASK_WAKE)
        backoff = _Backoff()
        while True:
            pubsub = self.storage.redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                while (message := await pubsub.get_message(timeout=None)) is None or message["type"] != "subscribe":
                    _stop_if_cancelled()
                self._subscribed.set()
                self._wake_all(list(self._waiters))  # whatever was published while we were not listening
                backoff.reset()
                while True:
                    _stop_if_cancelled()
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message["type"] == "message":
                        self._wake_one(message["data"])
            except (RedisError, OSError) as error:
                _stop_if_cancelled()
                self._subscribed.clear()
                logger.warning("task wake-up subscription failed (%s); polls re-check meanwhile", error)
                await backoff.sleep()
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 8.1


class RedisEvents:
    """Carries the engine's events between the processes sharing one Redis, by pub/sub.

    Delivery is at most once: a process that is not subscribed at the moment (starting, reconnecting)
    misses what is published meanwhile. History does not depend on it: each process records its own
    events.

    Args:
        redis_client: The client to publish and subscribe with.
        channel: The pub/sub channel (``keys.EVENTS`` under the storage's namespace).
    """

    def __init__(self, redis_client: aioredis.Redis, channel: str) -> None:
        self.redis = redis_client
        self.channel = channel

    async def publish_events(self, payloads: list[bytes]) -> None:
        """Publish a batch of serialized events in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.publish(self.channel, payload)
            await pipe.execute()

    async def listen_events(self) -> AsyncIterator[bytes]:
        """Every event published from now on, until the connection fails (the caller reconnects)."""
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if message is not None and message["type"] == "message":
                    yield message["data"]
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py 8.1


async def _cancel_and_wait(tasks: list[asyncio.Task[None]], timeout_s: float = 5.0) -> None:
    """Cancel background tasks and wait for them, but not forever (see :func:`_stop_if_cancelled`)."""
    for task in tasks:
        task.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            logger.error("%s did not stop within %s s of being cancelled", task.get_name(), timeout_s)


class _Backoff:
    """Exponential backoff with jitter between reconnection attempts."""

    def __init__(self, first_s: float = 0.05, cap_s: float = 5.0) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.delay_s = first_s

    def reset(self) -> None:
        self.delay_s = self.first_s

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay_s * random.uniform(0.5, 1.0))
        self.delay_s = min(self.cap_s, self.delay_s * 2)


def _cancellations() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def _stop_if_cancelled(baseline: int = 0) -> None:
    """Raise CancelledError if this task was asked to stop since it had ``baseline`` requests.

    redis-py 8.1 on Python 3.11 can end a cancelled call normally (a blocking read answers None once
    ``asyncio.timeout`` has turned the cancellation into a timeout), so the CancelledError never
    arrives; a loop that goes on waiting would keep its task, and whoever awaits it, forever.
    """
    if _cancellations() > baseline:
        raise asyncio.CancelledError


# -- encoding -------------------------------------------------------------------------------------
def _flag(value: bool) -> str:
    return "1" if value else "0"


def _score(value: float) -> str:
    """A float as Redis parses it back exactly (Lua would round it to 14 digits)."""
    return repr(float(value))


def _job_fields(job: Job, token: str) -> list[Any]:
    """The job as ``store_job`` in the scripts reads it."""
    counted = orjson.dumps([job.blueprint, str(job.status), job.state])
    terminal = _flag(job.status in TERMINAL_STATUSES)
    doc = orjson.dumps(job)  # the same bytes as job.to_dict() (orjson reads dataclasses), 20x faster
    status = str(job.status)
    return [job.id, job.version, doc, token, status, job.blueprint, job.state, job.client or "", counted, terminal]


def _task_fields(task: Task) -> list[Any]:
    """The task as ``store_task`` in the scripts reads it; the score puts higher priorities first."""
    doc = orjson.dumps(task)
    score = _score(0.0 - task.priority)
    return [task.id, task.job_id, task.type, str(task.status), task.worker_id or "", doc, score, _score(task.queued_at)]


def _text(value: Raw) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _job(doc: Raw) -> Job:
    job: Job = Job.from_dict(orjson.loads(doc))
    return job


def _worker(doc: Raw) -> WorkerRecord:
    record: WorkerRecord = WorkerRecord.from_dict(orjson.loads(doc))
    return record


def _task(stored: Mapping[Raw, Raw]) -> Task:
    """A task from its hash: the stored document with the fields changed since laid over it."""
    data = orjson.loads(stored[b"doc"])
    data["status"] = _text(stored[b"status"])
    worker_id = stored.get(b"worker_id")
    data["worker_id"] = _text(worker_id) if worker_id else None
    for name, value in stored.items():
        if isinstance(name, bytes) and name.startswith(b"x:"):
            data[name[2:].decode()] = orjson.loads(value)
    task: Task = Task.from_dict(data)
    return task


def _pairs(flat: list[Raw]) -> dict[Raw, Raw]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _member_task_id(member: bytes) -> str:
    return member.split(b":", 1)[1].decode()


def _counts(stored: Mapping[Raw, Raw]) -> dict[str, int]:
    return {_text(name): int(n) for name, n in stored.items() if int(n) > 0}


def _flat(entries: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Stream entries as (id, fields), whether the reply nests them once or twice (RESP2/RESP3)."""
    if entries and isinstance(entries[0], list) and entries[0] and isinstance(entries[0][0], list | tuple):
        return [entry for group in entries for entry in group]
    return list(entries)


def _anything(task: Task) -> bool:
    return True
