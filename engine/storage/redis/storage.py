"""RedisStorage: jobs, tasks, workers and timers, each change one Lua script (:mod:`.scripts`).

The runnable stream's reader and leases are in :mod:`.runnable`, the wake-ups of long polls in
:mod:`.wakeups`, the events and worker-command transports in :mod:`.transport`.
"""

# Long: RedisStorage is the whole Storage contract, each method one script call or a read; split, the
# contract would be spread over classes that share one connection and one set of keys.

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import RedisError, ResponseError

from ...errors import VersionConflict
from ...events import LISTENING, Event
from ...feed import entry_of
from ...models import Breakpoint, BulkAction, Job, JobStatus, Task, WorkerRecord, now
from ...timers import TimerKind
from ..base import (
    FEED_READER_TTL_S,
    BranchAnswer,
    Commit,
    FeedEntry,
    JobFilter,
    StepStart,
    Storage,
    TaskPoll,
    TimerClaim,
)
from . import keys
from .background import cancellation_count, stop_if_cancelled
from .connection import Script, SharedConnection
from .encoding import (
    Raw,
    as_mapping,
    as_text,
    decode_counts,
    decode_job,
    decode_task,
    decode_worker,
    exact_score,
    flag,
    head_version,
    job_fields,
    paired,
    scored,
    split_job,
    task_fields,
    task_record,
)
from .keys import Keys
from .runnable import RunnableReader
from .scripts import SOURCES
from .transport import RedisEvents
from .wakeups import TaskWakeups, Waiter

logger = logging.getLogger(__name__)

#: Replies of the take script (see ``TAKE_TASK`` in :mod:`.scripts`).
_TAKEN, _ASKED = 1, 2
#: Replies of the branch result script (see ``ADD_BRANCH_RESULT`` in :mod:`.scripts`).
_BRANCH_ANSWERS = {
    1: BranchAnswer.RECORDED,
    2: BranchAnswer.COMPLETE,
    3: BranchAnswer.DUPLICATE,
    4: BranchAnswer.CLOSED,
}
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
#: What ``list_jobs`` filters by; jobs are listed (a ``JOBS_BY`` zset each) by the first two only: a
#: list by blueprint or state cost every job a sorted-set entry (~145 bytes) and every move two commands.
_FILTERS = ("status", "client", "blueprint", "state")
_LISTED = frozenset(_FILTERS[:2])


#: Random bytes in a process's call tokens (then a count: one token per call). A job's record keeps its
#: last commit's (see ``keys.JOB``), which a retried call is told by: with 48 random bits, two processes
#: of a thousand share them with odds of 1 in 560 million, and even then a call is mistaken for another
#: only if both have one count and one job.
TOKEN_RANDOM_BYTES = 6


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
        namespace: Prefix of every key (see :mod:`avtomatika.storage.redis.keys`); tests and apps can share a Redis.
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
                # Blocking reads (XREADGROUP BLOCK, pub/sub) wait as long as they ask, as before redis-py
                # 8, which cuts every read at 5 s by default. A URL's own socket_timeout= still wins.
                socket_timeout=None,
            )
            redis_client = aioredis.Redis.from_pool(pool)
            self._owns_client = True
        else:
            self._owns_client = False
        if redis_client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisStorage needs a client with decode_responses=False (records are bytes)")
        self.redis = redis_client  # blocking reads and pub/sub; every other command goes by ``connection``
        self.connection = SharedConnection(redis_client, RETRIES)
        self.keys = Keys(namespace)
        self.lease_s = lease_s
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.recheck_s = recheck_s
        self.max_terminal_jobs = max_terminal_jobs
        self._scripts = {name: Script(self.connection, source) for name, source in SOURCES.items()}
        self._tokens = map(f"{os.urandom(TOKEN_RANDOM_BYTES).hex()}:{{}}".format, itertools.count())
        #: How long a read may wait for its reply before the client gives up (None: as long as it asks).
        self.socket_timeout_s = _socket_timeout_s(redis_client)
        self._runnable = RunnableReader(self)
        self._wakeups = TaskWakeups(self)
        self._polls_ended = False
        self._feed_id = ""
        self._task_types_added: dict[str, float] = {}  # task type -> when (monotonic) added to TASK_TYPES

    # -- lifecycle -------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Check the connection, load the scripts, create the consumer group, subscribe to wake-ups."""
        self._polls_ended = False
        self.connection.open()
        await self.ping()
        for script in self._scripts.values():
            await self.connection.execute("SCRIPT", "LOAD", script.source)
        await self._runnable.create_group()
        await self._wakeups.start()
        feed_id_key = self.keys.key(keys.FEED_ID)
        await self.connection.execute("SET", feed_id_key, f"redis:{uuid.uuid4().hex}", "NX")
        self._feed_id = as_text(await self.connection.execute("GET", feed_id_key))

    async def close(self) -> None:
        """Stop this process's reader and subscription; close the client if it was built here."""
        await self._runnable.stop()
        await self._wakeups.stop()
        await self.connection.close()
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
        return RedisEvents(self.redis, self.keys.key(keys.EVENTS), self.connection, announce=LISTENING)

    def worker_command_transport(self) -> RedisEvents:
        """Commands for workers go to every engine process by pub/sub, each delivering to its sockets."""
        return RedisEvents(self.redis, self.keys.key(keys.WORKER_COMMANDS), self.connection)

    async def _run(self, script: str, keys: Iterable[str], args: Iterable[Any]) -> Any:
        return await self._scripts[script](keys=list(keys), args=[self.keys.prefix, *args])

    async def _run_once(self, script: str, keys: Iterable[str], args: list[Any], token_at: int) -> Any:
        """Run a script that keeps its reply under the call token ``args[token_at]`` (see ``keys.REPLY``),
        telling it by the flag after the token whether the call is sent again and may have run: only
        then does it look for a kept reply (a token is new on the first send)."""
        before, after = [self.keys.prefix, *args[: token_at + 1]], args[token_at + 1 :]
        return await self._scripts[script](keys=list(keys), args=[*before, "0", *after], again=[*before, "1", *after])

    # -- jobs ------------------------------------------------------------------------------------
    async def create_job(self, job: Job, *, run: bool = True, events: Sequence[Event] = ()) -> Job:
        job.version = 1
        promise = self._runnable.promise(run)
        fields = job_fields(job, next(self._tokens))
        args = [self.max_terminal_jobs, flag(run), promise.consumer, *fields, entry_of(events), *promise.lease_args]
        reply = None
        try:
            reply = await self._run("create_job", [self.keys.job(job.id)], args)
        finally:
            self._runnable.settle(promise, reply, job)
        return job

    async def get_job(self, job_id: str) -> Job | None:
        found = await self._job_record(job_id)
        return decode_job(found[1]) if found is not None else None

    async def job_version(self, job_id: str) -> int | None:
        """The second line of the job's record, read from its first 64 bytes (they hold it): not its
        task ids and document, which run to kilobytes in a fan-out's job."""
        job_key = self.keys.job(job_id)
        try:
            head = await self.connection.execute("GETRANGE", job_key, 0, 63)
        except ResponseError as error:
            _raise_unless_hash(error)
            version = await self.connection.execute("HGET", job_key, "version")
            return int(version) if version is not None else None
        return head_version(head) if head else None

    async def _job_records(self, job_ids: Sequence[Raw]) -> list[tuple[int, bytes] | None]:
        """The version and document of each job (None if it is gone): a GET each, sent together.

        A job a version before 2026-12-07 stored (a hash, see ``keys.JOB``) is read as one.
        """
        ids = [as_text(job_id) for job_id in job_ids]
        try:
            records = await self.connection.execute_many([("GET", self.keys.job(job_id)) for job_id in ids])
            return [split_job(record, job_id) if record else None for record, job_id in zip(records, ids, strict=True)]
        except ResponseError as error:
            _raise_unless_hash(error)
        return [await self._job_record(job_id) for job_id in ids]

    async def _job_record(self, job_id: str) -> tuple[int, bytes] | None:
        job_key = self.keys.job(job_id)
        try:
            record = await self.connection.execute("GET", job_key)
        except ResponseError as error:
            _raise_unless_hash(error)
            version, doc = await self.connection.execute("HMGET", job_key, "version", "doc")
            return (int(version), doc) if doc is not None else None
        return split_job(record, job_id) if record is not None else None

    async def commit(self, change: Commit) -> Job:
        job = change.job
        expected, updated_at = job.version, job.updated_at
        job.version, job.updated_at = expected + 1, now()
        promise = self._runnable.promise(change.run)
        fan_in = "" if change.fan_in is None else change.fan_in
        token = next(self._tokens)
        args: list[Any] = [expected, self.max_terminal_jobs, flag(change.run), fan_in, promise.consumer]
        fields = job_fields(job, token)
        args += fields
        args += [len(change.close_tasks), *(x for item in change.close_tasks.items() for x in item)]
        args += [len(change.tasks), *(x for task in change.tasks for x in task_fields(task))]
        task_types = self._task_types_to_add(change.tasks)
        args += [len(task_types), *task_types]
        args += [len(change.cancel_timers), *change.cancel_timers]
        args += [
            len(change.timers),
            *(x for timer_id, due in change.timers.items() for x in (timer_id, exact_score(due))),
        ]
        args += [len(change.branch_results)]
        args += [x for task_id, result in change.branch_results.items() for x in (task_id, orjson.dumps(result))]
        for child in change.children:
            child.version = 1
        args += [len(change.children), *(x for child in change.children for x in job_fields(child, token))]
        args.append(entry_of(change.events))
        entry_id = self._runnable.end_step(job.id) if change.ends_step else b""
        args += [entry_id, change.ends_step, max(1, int(self.lease_s * 1000)), *promise.lease_args]
        reply = None
        try:
            reply = await self._run("commit", [self.keys.job(job.id)], args)
        except BaseException:
            job.version, job.updated_at = expected, updated_at
            self._runnable.step_not_ended(job.id, entry_id)
            raise
        finally:
            self._runnable.settle(promise, reply, job)
        if not reply[0]:
            job.version, job.updated_at = expected, updated_at
            self._runnable.step_not_ended(job.id, entry_id)
            raise VersionConflict(job.id)
        self._task_types_added |= dict.fromkeys(task_types, time.monotonic())
        if change.ends_step:
            await self._runnable.step_ended(job.id, entry_id, change.ends_step)
        return job

    def _task_types_to_add(self, tasks: Sequence[Task]) -> list[str]:
        """The types of ``tasks`` this process has not added to ``keys.TASK_TYPES`` in the last
        ``keys.TASK_TYPES_REFRESH_S``."""
        at = time.monotonic()
        types = dict.fromkeys(task.type for task in tasks)
        return [t for t in types if at - self._task_types_added.get(t, -math.inf) >= keys.TASK_TYPES_REFRESH_S]

    async def list_jobs(self, where: JobFilter, limit: int = 50, offset: int = 0) -> list[Job]:
        if limit <= 0:
            return []
        wanted = {name: value for name in _FILTERS if (value := getattr(where, name))}
        lists, exact = await self._lists(where)
        # Every job of exact lists matches (bar a commit in between), so seek to the offset.
        exact = exact and set(wanted) <= _LISTED
        start, skip = (offset, 0) if exact else (0, offset)
        page = limit if exact else max(LIST_PAGE, limit)
        found: list[Job] = []
        while len(found) < limit:
            ids = await self._list_page(lists, start, page)
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

    async def _lists(self, where: JobFilter) -> tuple[list[str], bool]:
        """The lists that hold every job of ``where``'s status and client (see ``keys.JOBS_BY``), each job
        in one of them: those of the status (or every status) and client, or of every client that has
        jobs of it (JOB_COUNTS says which); and whether every job they hold has that status and client.
        A list by client of older versions holds jobs of every status: not, for a status and client."""
        statuses = [str(where.status)] if where.status else [str(status) for status in JobStatus]
        if where.client:
            lists = [self.keys.jobs_of(status, where.client) for status in statuses]
            before = self.keys.jobs_by_client_before(where.client)
            if not await self.connection.execute("EXISTS", before):  # an emptied list is deleted
                return lists, True
            return [*lists, before], not where.status
        clients = {(status, client) for (_, status, _, client) in await self._counted() if client}
        lists = [self.keys.jobs_of(status) for status in statuses]
        lists += [self.keys.jobs_of(status, client) for status, client in sorted(clients) if status in statuses]
        return lists, True

    async def _list_page(self, lists: list[str], start: int, count: int) -> list[Raw]:
        """The ids at ``start`` .. ``start + count - 1`` of ``lists`` merged (newest first), as one list
        of all their jobs would order them."""
        end = start + count - 1
        if len(lists) == 1:
            return cast(list[Raw], await self.connection.execute("ZREVRANGE", lists[0], start, end))
        replies = await self.connection.execute_many([("ZREVRANGE", name, 0, end, "WITHSCORES") for name in lists])
        # ZREVRANGE's order: by score, then by member, both descending.
        merged = heapq.merge(*map(scored, replies), key=lambda pair: (pair[1], pair[0]), reverse=True)
        return [job_id for job_id, _ in itertools.islice(merged, start, end + 1)]

    async def _read_jobs(self, job_ids: Sequence[Raw]) -> list[Job | None]:
        return [decode_job(found[1]) if found is not None else None for found in await self._job_records(job_ids)]

    async def count_jobs(self, client: str | None = None) -> dict[tuple[str, str, str], int]:
        counts: dict[tuple[str, str, str], int] = {}
        for (blueprint, status, state, owner), n in (await self._counted()).items():
            if n > 0 and (client is None or owner == client):
                key = (blueprint, status, state)
                counts[key] = counts.get(key, 0) + n
        return counts

    async def _counted(self) -> dict[tuple[str, str, str, str | None], int]:
        """JOB_COUNTS: (blueprint, status, state, client) -> number of jobs, fields at 0 included (a field
        counted before clients were has 3 items: counted with client None)."""
        stored = as_mapping(await self.connection.execute("HGETALL", self.keys.key(keys.JOB_COUNTS)))
        counted: dict[tuple[str, str, str, str | None], int] = {}
        for field, n in stored.items():
            blueprint, status, state, *owner = orjson.loads(field)
            key = (blueprint, status, state, owner[0] if owner else None)
            counted[key] = counted.get(key, 0) + int(n)
        return counted

    # -- runnable queue --------------------------------------------------------------------------
    async def take_runnable(self, timeout_s: float, holder: str = "") -> str | None:
        return await self._runnable.take(timeout_s, holder)

    async def ack_runnable(self, job_id: str) -> None:
        await self._runnable.ack(job_id)

    async def finish_step(self, job_id: str, holder: str) -> None:
        """One script: the step lease released and the job's entry acknowledged."""
        await self._runnable.ack(job_id, holder)

    # -- step leases -----------------------------------------------------------------------------
    async def lease_job(self, job_id: str, holder: str, lease_s: float | None = None) -> bool:
        """SET NX PX; renewed every third of ``lease_s`` by this process's lease renewer until released."""
        return (await self.lease_and_get_job(job_id, holder, lease_s)).leased

    async def lease_and_get_job(self, job_id: str, holder: str, lease_s: float | None = None) -> StepStart:
        """The lease, the job's document and the breakpoints in one script; none when the script that
        handed this process the job's entry took the lease for ``holder`` with it (``take_runnable``)."""
        # Never shorter than ``self.lease_s``: held leases are renewed every third of that.
        lease_s = self.lease_s if lease_s is None else max(lease_s, self.lease_s)
        pre = self._runnable.pre_leased(job_id)
        if pre is not None and pre.holder == holder and lease_s == self.lease_s:
            self._runnable.hold_step_lease(job_id, holder, lease_s)
            return StepStart(
                True, decode_job(pre.doc) if pre.doc is not None else None, _breakpoints_of(pre.breakpoints)
            )
        if pre is not None:  # taken for another holder: given up first
            await self.release_job_lease(job_id, pre.holder)
        keys_ = [self.keys.step_lease(job_id), self.keys.job(job_id), self.keys.key(keys.BREAKPOINTS)]
        lease_args = [holder, max(1, int(lease_s * 1000)), job_id]
        taken, *read = await self._scripts["lease_step"](keys=keys_, args=lease_args)
        if not taken:
            return StepStart(False)
        self._runnable.hold_step_lease(job_id, holder, lease_s)
        doc, stored = read
        return StepStart(True, decode_job(doc) if doc is not None else None, _breakpoints_of(stored))

    async def release_job_lease(self, job_id: str, holder: str) -> None:
        self._runnable.drop_step_lease(job_id, holder)
        await self._scripts["release_step_lease"](keys=[self.keys.step_lease(job_id)], args=[holder])

    # -- tasks -----------------------------------------------------------------------------------
    async def get_task(self, task_id: str) -> Task | None:
        task_key = self.keys.task(task_id)
        try:
            record = await self.connection.execute("GET", task_key)
        except ResponseError as error:
            _raise_unless_hash(error)
            stored = as_mapping(await self.connection.execute("HGETALL", task_key))
            return decode_task(stored) if stored else None
        return decode_task(task_record(record, task_id)) if record is not None else None

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
        return decode_task(paired(reply)) if reply else None

    async def take_task(self, poll: TaskPoll) -> Task | None:
        worker = poll.worker
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + poll.timeout_s
        topics = [f"w:{worker.worker_id}".encode(), *(f"t:{t}".encode() for t in worker.supported_tasks)]
        cancellations = cancellation_count()
        await self._wakeups.start()
        woken: Waiter | None = None  # chosen for a notification, not yet looked at the queues since
        try:
            while not self._polls_ended:
                stop_if_cancelled(cancellations)
                with self._wakeups.waiting(topics) as waiter:  # before looking, so no wake-up falls between
                    task, left_some = await self._take_now(worker, poll.default_timeout_s, poll.eligible)
                    if task is not None:
                        return task
                    passed, woken = woken, None
                    if passed is not None and left_some:
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
        if woken is not None:  # chosen, then the polls were ended before it looked
            self._wakeups.pass_on(woken)
        return None

    def end_polls(self) -> None:
        self._polls_ended = True
        self._wakeups.wake_everyone()

    async def _take_now(
        self, worker: WorkerRecord, default_timeout_s: float, eligible: Callable[[Task], bool]
    ) -> tuple[Task | None, bool]:
        """Take the worker's best task now, or None and whether it passed over tasks it may not take.

        One script looks and takes at once (``TAKE_TASK``), so concurrent takers, of this process or
        another, never race for a task they both saw: one round trip, unless tasks ``eligible`` must
        be asked about come first. The script then hands those over and is called again with the
        answers (each call goes on from the queues as they are by then).
        """
        task_types = list(dict.fromkeys(worker.supported_tasks))
        zsets = [
            self.keys.inbox(worker.worker_id),
            *(self.keys.queue(task_type) for task_type in task_types),
            *(self.keys.key(keys.INBOXED, task_type) for task_type in task_types),
        ]
        eligible_ids: list[str] = []
        ineligible_ids: list[str] = []
        while True:
            taken_at, token = orjson.dumps(now()), next(self._tokens)
            args: list[Any] = [worker.worker_id, taken_at, exact_score(default_timeout_s), token, len(task_types)]
            args.append(exact_score(now() - self.steal_after_s))
            args += [len(eligible_ids), *eligible_ids, len(ineligible_ids), *ineligible_ids]
            kind, *rest = await self._run_once("take_task", zsets, args, token_at=3)
            if kind == _TAKEN:
                return decode_task(as_mapping(rest[0])), False
            if kind != _ASKED:
                return None, bool(rest[0])
            for task in (decode_task(as_mapping(stored)) for stored in rest):
                (eligible_ids if eligible(task) else ineligible_ids).append(task.id)

    async def queue_lengths(self) -> dict[str, int]:
        """Each task type's QUEUE and INBOXED sizes (see ``keys.TASK_TYPES``), of the types listed there
        or in QUEUED_COUNTS (those counted by versions before it)."""
        listed = await self.connection.execute_many(
            [("SMEMBERS", self.keys.key(keys.TASK_TYPES)), ("HKEYS", self.keys.key(keys.QUEUED_COUNTS))]
        )
        task_types = sorted({as_text(task_type) for found in listed for task_type in found})
        sizes = await self.connection.execute_many(
            [("ZCARD", name) for t in task_types for name in (self.keys.queue(t), self.keys.key(keys.INBOXED, t))]
        )
        counts = {t: queued + inboxed for t, queued, inboxed in zip(task_types, sizes[::2], sizes[1::2], strict=True)}
        return {t: n for t, n in counts.items() if n}

    async def worker_load(self) -> dict[str, int]:
        return decode_counts(as_mapping(await self.connection.execute("HGETALL", self.keys.key(keys.LOAD_COUNTS))))

    # -- fan-in ----------------------------------------------------------------------------------
    async def add_branch_result(
        self, job_id: str, task_id: str, result: dict[str, Any], events: Sequence[Event] = ()
    ) -> BranchAnswer:
        promise = self._runnable.promise(True)
        keys_ = [self.keys.branches(job_id), self.keys.job(job_id)]
        args = [task_id, orjson.dumps(result), entry_of(events), job_id, promise.consumer, *promise.lease_args]
        reply = None
        try:
            reply = await self._run("add_branch_result", keys_, args)
        finally:
            self._runnable.settle(promise, reply)
        return _BRANCH_ANSWERS[int(reply[0])]

    async def branch_results(self, job_id: str) -> dict[str, dict[str, Any]]:
        stored = as_mapping(await self.connection.execute("HGETALL", self.keys.branches(job_id)))
        return {as_text(task_id): orjson.loads(result) for task_id, result in stored.items()}

    # -- timers ----------------------------------------------------------------------------------
    async def claim_timers(self, at: float, lease_s: float, limit: int = 100) -> list[TimerClaim]:
        again = exact_score(at + lease_s)
        args = [exact_score(at), limit, next(self._tokens), again]
        reply = await self._run_once("claim_timers", [], args, token_at=2)
        return [TimerClaim(as_text(timer_id), again) for timer_id in reply]

    async def finish_timers(self, claims: Sequence[TimerClaim]) -> None:
        if claims:
            await self._run("finish_timers", [], [x for claim in claims for x in (claim.timer_id, claim.token)])

    async def next_timer_at(self) -> float | None:
        first = scored(await self.connection.execute("ZRANGE", self.keys.key(keys.TIMERS), 0, 0, "WITHSCORES"))
        return first[0][1] if first else None

    # -- workers ---------------------------------------------------------------------------------
    async def save_worker(self, record: WorkerRecord) -> None:
        args = [record.worker_id, orjson.dumps(record), exact_score(record.expires_at)]
        await self._run("save_worker", [], args)

    async def get_worker(self, worker_id: str) -> WorkerRecord | None:
        raw = await self.connection.execute("GET", self.keys.worker(worker_id))
        return decode_worker(raw) if raw is not None else None

    async def list_workers(self) -> list[WorkerRecord]:
        worker_ids = cast(list[Raw], await self.connection.execute("ZRANGE", self.keys.key(keys.WORKERS), 0, -1))
        if not worker_ids:
            return []
        docs = await self.connection.execute(
            "MGET", *(self.keys.worker(as_text(worker_id)) for worker_id in worker_ids)
        )
        return [decode_worker(doc) for doc in docs if doc is not None]

    async def expire_workers(self, at: float) -> list[tuple[WorkerRecord, list[str]]]:
        reply = iter(await self._run_once("expire_workers", [], [exact_score(at), next(self._tokens)], token_at=1))
        expired = []
        for doc in reply:
            task_ids = [as_text(next(reply)) for _ in range(int(next(reply)))]
            expired.append((decode_worker(doc), sorted(task_ids)))
        return expired

    # -- breakpoints -----------------------------------------------------------------------------
    async def set_breakpoint(self, breakpoint: Breakpoint) -> None:
        await self.connection.execute(
            "HSET", self.keys.key(keys.BREAKPOINTS), breakpoint.id, orjson.dumps(breakpoint.to_dict())
        )

    async def remove_breakpoint(self, breakpoint_id: str) -> Breakpoint | None:
        reply = await self._scripts["remove_breakpoint"](
            keys=[self.keys.key(keys.BREAKPOINTS), self.keys.key(keys.TIMERS)],
            args=[breakpoint_id, TimerKind.RELEASE_HOLDS.of(breakpoint_id), now()],
        )
        return Breakpoint.from_dict(orjson.loads(reply)) if reply else None

    async def breakpoints(self) -> list[Breakpoint]:
        return _breakpoints_of(await self.connection.execute("HGETALL", self.keys.key(keys.BREAKPOINTS)))

    # -- bulk actions ----------------------------------------------------------------------------
    async def create_bulk(self, action: BulkAction, job_ids: Sequence[str]) -> None:
        """One MULTI: every command idempotent, so one sent again after a lost reply changes nothing
        (the record is set only if absent)."""
        record, listed = self.keys.key(keys.BULK, action.id), self.keys.key(keys.BULK_JOBS, action.id)
        commands: list[tuple[Any, ...]] = [("MULTI",), ("DEL", listed)]
        commands += [("RPUSH", listed, *job_ids[i : i + 1000]) for i in range(0, len(job_ids), 1000)]
        commands += [
            ("EXPIRE", listed, keys.BULK_TTL_S),
            ("SET", record, orjson.dumps(action.to_dict()), "NX", "EX", keys.BULK_TTL_S),
            ("ZADD", self.keys.key(keys.BULKS), action.created_at, action.id),
            ("ZADD", self.keys.key(keys.TIMERS), now(), TimerKind.BULK.of(action.id)),
            ("EXEC",),
        ]
        await self.connection.execute_many(commands)

    async def get_bulk(self, bulk_id: str) -> BulkAction | None:
        doc = await self.connection.execute("GET", self.keys.key(keys.BULK, bulk_id))
        return BulkAction.from_dict(orjson.loads(doc)) if doc is not None else None

    async def list_bulks(self, limit: int = 50) -> list[BulkAction]:
        index = self.keys.key(keys.BULKS)
        ids = [as_text(i) for i in await self.connection.execute("ZREVRANGE", index, 0, max(0, limit - 1))]
        if not ids:
            return []
        docs = await self.connection.execute("MGET", *(self.keys.key(keys.BULK, i) for i in ids))
        if expired := [bulk_id for bulk_id, doc in zip(ids, docs, strict=True) if doc is None]:
            await self.connection.execute("ZREM", index, *expired)
        return [BulkAction.from_dict(orjson.loads(doc)) for doc in docs if doc is not None]

    async def bulk_jobs(self, bulk_id: str, start: int, count: int) -> list[str]:
        found = await self.connection.execute(
            "LRANGE", self.keys.key(keys.BULK_JOBS, bulk_id), start, start + count - 1
        )
        return [as_text(job_id) for job_id in found]

    async def save_bulk(self, action: BulkAction, due_at: float | None) -> bool:
        expected = action.version
        action.version += 1
        saved = await self._scripts["save_bulk"](
            keys=[
                self.keys.key(keys.BULK, action.id),
                self.keys.key(keys.BULK_JOBS, action.id),
                self.keys.key(keys.TIMERS),
            ],
            args=[
                expected,
                orjson.dumps(action.to_dict()),
                TimerKind.BULK.of(action.id),
                "" if due_at is None else repr(due_at),
                keys.BULK_TTL_S,
            ],
        )
        if not saved:
            action.version = expected
        return bool(saved)

    # -- the history feed ------------------------------------------------------------------------
    @property
    def feed_id(self) -> str:
        if not self._feed_id:
            raise RuntimeError("RedisStorage.feed_id is known once connected")
        return self._feed_id

    async def read_feed(self, after: str | None, limit: int) -> list[FeedEntry]:
        start = "-" if after is None else f"({after}"
        entries = await self.connection.execute("XRANGE", self.keys.key(keys.FEED), start, "+", "COUNT", limit)
        return [FeedEntry(as_text(entry_id), fields[b"e"]) for entry_id, fields in _stream_fields(entries)]

    async def trim_feed(self, reader: str, through: str) -> None:
        feed_keys = [self.keys.key(keys.FEED), self.keys.key(keys.FEED_READERS)]
        await self._scripts["trim_feed"](keys=feed_keys, args=[reader, through, repr(now()), FEED_READER_TTL_S])

    async def lease_feed(self, reader: str, holder: str, lease_s: float) -> bool:
        lease_keys = [self.keys.key(keys.FEED_LEASE, reader), self.keys.key(keys.FEED_READERS)]
        args = [holder, int(lease_s * 1000) if lease_s > 0 else 0, reader, repr(now())]
        return bool(await self._scripts["lease_feed"](keys=lease_keys, args=args))

    async def feed_length(self) -> int:
        return int(await self.connection.execute("XLEN", self.keys.key(keys.FEED)))


def _stream_fields(entries: Any) -> list[tuple[Raw, dict[bytes, bytes]]]:
    """XRANGE's entries as (id, fields): fields come as a flat list (RESP2) or a map (RESP3)."""
    return [(entry_id, as_mapping(fields)) for entry_id, fields in entries]


def _breakpoints_of(stored: Any) -> list[Breakpoint]:
    """The breakpoints of an HGETALL of the breakpoints hash, oldest first."""
    found = [Breakpoint.from_dict(orjson.loads(doc)) for doc in as_mapping(stored).values()]
    return sorted(found, key=lambda bp: bp.created_at)


def _socket_timeout_s(client: aioredis.Redis) -> float | None:
    """The read timeout of ``client``'s connections (redis-py's default when it was not given)."""
    pool = client.connection_pool
    timeout = pool.connection_class(**pool.connection_kwargs).socket_timeout
    return float(timeout) if timeout is not None else None


def _raise_unless_hash(error: ResponseError) -> None:
    """Raise ``error`` unless it is WRONGTYPE: the key holds a job or task as a version before 2026-12-07
    kept it (a hash, see ``keys.JOB`` and ``keys.TASK``), which the caller reads as one."""
    if not str(error).startswith("WRONGTYPE"):
        raise error
