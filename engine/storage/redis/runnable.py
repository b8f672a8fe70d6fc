"""The runnable stream as one process reads it: a consumer group, leases, and their renewal."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError, ResponseError

from ...models import Job, named
from . import keys
from .background import Backoff, cancel_and_wait, stop_if_cancelled
from .encoding import as_text, stream_entries

if TYPE_CHECKING:
    from .storage import RedisStorage

logger = logging.getLogger(__name__)

#: Entries this process acknowledges between two deletions of those every engine is done with: an
#: acknowledged entry is deleted by a trim now and then (``TRIM_RUNNABLE``), not an ``XDEL`` each.
TRIM_EVERY = 100


@dataclass(frozen=True, slots=True)
class Promise:
    """What a script that queues a job does for this process's idle takers (see :meth:`RunnableReader.promise`).

    ``consumer``: read an entry for it ('' for none); ``holder``: then take the step lease of that
    entry's job for it, ``lease_ms`` long ('' for none).
    """

    consumer: str = ""
    holder: str = ""
    lease_ms: int = 0

    @property
    def lease_args(self) -> list[Any]:
        """The holder and lease length, as the scripts' ``run`` reads them."""
        return [self.holder, self.lease_ms]


NOTHING = Promise()


@dataclass(frozen=True, slots=True)
class PreLease:
    """A step lease a script took for ``holder`` as it handed this process the job's entry, and what
    the step starts from as read then (see :meth:`RunnableReader.pre_leased`)."""

    holder: str
    taken_at: float  # the event loop's time
    doc: bytes | None  # the job's document (None: it is gone)
    breakpoints: Any  # HGETALL of the breakpoints


class RunnableReader:
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
        # A blocking read shorter than the client's read timeout, or the client cuts it and sends it again.
        timeout = storage.socket_timeout_s
        self.block_s = self.claim_every_s if timeout is None else max(0.01, min(self.claim_every_s, timeout / 2))
        self._takers: deque[asyncio.Future[tuple[bytes, str]]] = deque()
        self._ready: deque[tuple[bytes, str]] = deque()  # read, not handed out yet
        self._held: dict[bytes, str] = {}  # entry id -> job id: read and not acknowledged
        self._step_leases: dict[str, tuple[str, float]] = {}  # job id -> (holder, lease_s): held here
        self._taken: dict[str, deque[bytes]] = {}  # job id -> entry ids handed out
        self._wanted = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._claim_cursor: bytes | str = "0-0"
        self._next_claim_at = 0.0
        self._promised = 0  # entries scripts are reading for this process's waiting takers
        self._holder = ""  # the step lease holder named by the last take (its job's lease is taken for it)
        self._pre_leases: dict[str, PreLease] = {}  # job id -> lease taken with its entry, not used yet
        self._acknowledged = 0  # since the last trim

    async def create_group(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self.storage.redis.xgroup_create(self.stream, keys.RUNNABLE_GROUP, id="0", mkstream=True)

    async def take(self, timeout_s: float, holder: str = "") -> str | None:
        self._start()
        self._holder = holder
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

    async def ack(self, job_id: str, holder: str = "") -> None:
        """Acknowledge the job's entry taken first; with ``holder``, release its step lease in the same call.

        Nothing is sent when neither is left here: no entry taken, and the lease not held by ``holder``
        (released by the commit that ended the step, see :meth:`end_step`, or lost).
        """
        holds = bool(holder) and self._step_leases.get(job_id, ("", 0.0))[0] == holder
        if not self._taken.get(job_id) and not holds:
            return
        entry_id = self.end_step(job_id)
        if holder:
            self.drop_step_lease(job_id, holder)  # not renewed while it is being released
        try:
            await self.storage._scripts["ack_entry"](
                keys=[self.stream, self.storage.keys.step_lease(job_id)], args=[keys.RUNNABLE_GROUP, entry_id, holder]
            )
        except BaseException:  # still held (and renewed): acknowledged when the caller tries again
            self.step_not_ended(job_id, entry_id)
            raise
        await self.step_ended(job_id, entry_id, holder)

    def end_step(self, job_id: str) -> bytes:
        """The job's entry taken first (b"" if none), for a call that acknowledges it; then
        :meth:`step_ended`, or :meth:`step_not_ended` if the call did not."""
        entries = self._taken.get(job_id)
        entry_id = entries.popleft() if entries else b""
        if entries is not None and not entries:
            del self._taken[job_id]
        return entry_id

    def step_not_ended(self, job_id: str, entry_id: bytes) -> None:
        """The call that was to acknowledge ``entry_id`` did not: it is held (and renewed) again."""
        if entry_id:
            self._taken.setdefault(job_id, deque()).appendleft(entry_id)

    async def step_ended(self, job_id: str, entry_id: bytes, holder: str) -> None:
        """``entry_id`` was acknowledged (b"": none was taken) and ``holder``'s step lease released."""
        if holder:
            self.drop_step_lease(job_id, holder)
        self._held.pop(entry_id, None)
        if entry_id:
            await self._trim_now_and_then()

    async def _trim_now_and_then(self) -> None:
        """Every TRIM_EVERY acknowledgements, delete the entries every engine is done with."""
        self._acknowledged += 1
        if self._acknowledged < TRIM_EVERY:
            return
        self._acknowledged = 0
        try:
            await self.storage._scripts["trim_runnable"](keys=[self.stream], args=[keys.RUNNABLE_GROUP])
        except (RedisError, OSError) as error:  # left for the next trim
            logger.warning("trimming the runnable stream failed (%s)", error)

    def _start(self) -> None:
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._read_forever(), name="avtomatika-redis-runnable"),
                asyncio.create_task(self._renew_forever(), name="avtomatika-redis-leases"),
            ]

    async def stop(self) -> None:
        """Stop reading; entries read but never handed out go back to the stream at once."""
        workers, self._workers = self._workers, []
        await cancel_and_wait(workers)
        for taker in self._takers:
            taker.cancel()
        unread = [entry_id for entry_id, _ in self._ready]
        self._ready.clear()
        await self._release_pre_leases()
        if unread:
            try:
                await self.storage._scripts["release_entries"](
                    keys=[self.stream], args=[keys.RUNNABLE_GROUP, self.storage.consumer, *unread]
                )
            except (RedisError, OSError):
                logger.warning("could not put back %d runnable entries; taken over after the lease", len(unread))

    async def _release_pre_leases(self) -> None:
        """Step leases taken with entries never stepped here: released, for whoever steps them next."""
        pre_leases, self._pre_leases = self._pre_leases, {}
        for job_id, pre in pre_leases.items():
            try:
                await self.storage._scripts["release_step_lease"](
                    keys=[self.storage.keys.step_lease(job_id)], args=[pre.holder]
                )
            except (RedisError, OSError):
                logger.warning("could not release the step lease of job %s; it expires", job_id)

    async def _read_forever(self) -> None:
        backoff = Backoff()
        while True:
            stop_if_cancelled()
            await self._wanted.wait()
            wanted = sum(1 for taker in self._takers if not taker.done())
            if not wanted:
                self._wanted.clear()
                continue
            try:
                entries = await self._read(wanted)
            except (RedisError, OSError) as error:  # never let the reader die: the takers depend on it
                stop_if_cancelled()
                if isinstance(error, ResponseError) and "NOGROUP" in str(error):
                    with contextlib.suppress(RedisError, OSError):
                        await self.create_group()  # the stream was deleted (FLUSHDB, a Redis without persistence)
                        continue
                logger.warning("reading runnable jobs failed (%s); retrying", error)
                await backoff.sleep()
                continue
            backoff.reset()
            for entry_id, job_id in entries:  # kept even if we stop now: renewed, or released by stop()
                self._deliver(entry_id, job_id)

    def _deliver(self, entry_id: bytes, job_id: str) -> None:
        """An entry read for this process: to the first waiting taker, or ready for the next one."""
        self._held[entry_id] = job_id
        taker = next((t for t in self._takers if not t.done()), None)
        if taker is not None:
            taker.set_result((entry_id, job_id))
        else:
            self._ready.append((entry_id, job_id))

    def promise(self, run: bool) -> Promise:
        """If ``run`` and one of this process's takers waits with no entry promised yet: its consumer
        name, and the step lease holder its last take named.

        A script that queues a job then reads an entry for this consumer on the way (no XREADGROUP round
        trip before a step of it starts here), and takes the step lease of that entry's job for the
        holder (no lease round trip either: :meth:`pre_leased`). Every promise is :meth:`settle`-d once
        the call ends.
        """
        if not run or not self._idle_takers_beyond(self._promised):
            return NOTHING
        self._promised += 1
        lease_ms = max(1, int(self.storage.lease_s * 1000))
        return Promise(self.storage.consumer, self._holder, lease_ms if self._holder else 0)

    def _idle_takers_beyond(self, count: int) -> bool:
        """Whether more than ``count`` takers wait with no entry handed to them (a walk of the takers
        that stops at the first past ``count``: most of a busy process's takers are idle)."""
        idle = (taker for taker in self._takers if not taker.done())
        return next(itertools.islice(idle, count, None), None) is not None

    def settle(self, promise: Promise, reply: list[Any] | None, job: Job | None = None) -> None:
        """Hand out the entry a script read for ``promise``: ``reply`` is ``[status, entry id, job id]``,
        then, if it took that job's step lease, its document (b"" when it is ``job``'s, which the script
        stored: made here, only then) and the breakpoints.

        An entry read by a call whose reply was lost stays with this consumer unrenewed: it is taken
        over after the lease, like the entries of a process that died (and the lease expires).
        """
        if not promise.consumer:
            return
        self._promised -= 1
        if reply is None or len(reply) < 3:
            return
        entry_job = as_text(reply[2])
        if len(reply) == 5:
            read = reply[3]
            if read == b"" and job is not None and entry_job == job.id:
                read = named(job)
            loop_time = asyncio.get_running_loop().time()
            self._pre_leases[entry_job] = PreLease(promise.holder, loop_time, read, reply[4])
        self._deliver(reply[1], entry_job)

    def pre_leased(self, job_id: str) -> PreLease | None:
        """The step lease taken with the job's entry for this process, if one was and it is fresh: taken
        less than half a lease ago, so it is held still and renewed in time once :meth:`hold_step_lease`
        (an older one is left to expire: the caller leases the job as it would without)."""
        pre = self._pre_leases.pop(job_id, None)
        if pre is None or asyncio.get_running_loop().time() - pre.taken_at >= self.storage.lease_s / 2:
            return None
        return pre

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
            block=max(1, int(self.block_s * 1000)),
        )
        streams = reply.values() if isinstance(reply, dict) else [entries for _, entries in reply or ()]
        return [(entry_id, data[b"job"].decode()) for entries in streams for entry_id, data in stream_entries(entries)]

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
            stop_if_cancelled()
            await asyncio.sleep(self.storage.lease_s / 3)
            if self._step_leases:
                try:
                    await self._renew_step_leases()
                except (RedisError, OSError) as error:
                    stop_if_cancelled()
                    logger.warning("renewing step leases failed (%s)", error)
            if not self._held:
                continue
            try:
                lost = await self.storage._scripts["renew_leases"](
                    keys=[self.stream], args=[keys.RUNNABLE_GROUP, self.storage.consumer, *self._held]
                )
            except (RedisError, OSError) as error:
                stop_if_cancelled()
                logger.warning("renewing runnable leases failed (%s)", error)
                continue
            for entry_id in lost:
                job_id = self._held.pop(entry_id, None)
                logger.warning("lost the lease on job %s to another process", job_id)
            if lost:
                gone = set(lost)
                for _, job_id in (entry for entry in self._ready if entry[0] in gone):
                    self._pre_leases.pop(job_id, None)  # long expired: the entry was idle past the lease
                self._ready = deque(entry for entry in self._ready if entry[0] not in gone)
