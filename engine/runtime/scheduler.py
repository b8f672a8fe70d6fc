"""Time-driven work and follow-ups: retry backoffs, task timeouts, lost tasks, resuming parents,
cancelling sub-jobs, telling workers to stop, continuing the jobs of a removed breakpoint, moving
bulk actions on; and the expiry of workers.

Timers live in storage (see :mod:`avtomatika.timers`). Each due timer is claimed by exactly one engine
process for a lease, carried out, then finished; one whose process dies before finishing it comes due
again when the lease ends, on any engine, and its handler (idempotent, it looks at the job first)
runs again. With several processes on one Redis a timeout is thus handled at least once, and its
effect, a versioned commit, lands once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..events import worker_expired
from ..storage.base import TimerClaim
from ..timers import TimerKind, parse_timer

if TYPE_CHECKING:
    from .bulk import BulkActions
    from .operations import Operations
    from .results import ResultProcessor
    from .shared import Runtime

logger = logging.getLogger(__name__)

#: Longest sleep between looks at the timers; bounds how late a timer set elsewhere can fire.
MAX_IDLE_S = 0.25
#: Longest a worker's WebSocket may take to accept a ``cancel_task`` (one that does not read is skipped).
SEND_TIMEOUT_S = 5.0


class Scheduler:
    def __init__(self, runtime: Runtime, results: ResultProcessor, operations: Operations, bulk: BulkActions) -> None:
        self.runtime = runtime
        self._last_reap = 0.0
        self._handlers: dict[TimerKind, Callable[[str], Awaitable[None]]] = {
            TimerKind.TIMEOUT: results.task_timed_out,
            TimerKind.LOST: results.task_lost,
            TimerKind.RETRY_TASK: results.retry_due,
            TimerKind.RETRY_JOB: operations.retry_step_due,
            TimerKind.RESUME_PARENT: operations.resume_parent,
            TimerKind.CANCEL_JOB: operations.cancel_child,
            TimerKind.CANCEL_TASK: self._cancel_on_worker(operations),
            TimerKind.RELEASE_HOLDS: operations.release_holds_due,
            TimerKind.BULK: bulk.step_due,
        }

    @staticmethod
    def _cancel_on_worker(operations: Operations) -> Callable[[str], Awaitable[None]]:
        async def cancel(task_id: str) -> None:
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    await operations.cancel_on_worker(task_id)
            except TimeoutError:
                logger.warning("a worker did not take cancel_task for task %s within %g s", task_id, SEND_TIMEOUT_S)

        return cancel

    async def run(self) -> None:
        due = self.runtime.committer.timers_due
        while True:
            due.clear()
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("scheduler tick failed")
            next_at = await self._next_at()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.005, min(MAX_IDLE_S, next_at - time.time()))):
                    await due.wait()

    async def tick(self) -> None:
        storage = self.runtime.storage
        claims = await storage.claim_timers(time.time(), storage.lease_s)
        done = [claim for claim in claims if await self._fire(claim)]
        await storage.finish_timers(done)
        if time.time() - self._last_reap >= self.reap_interval_s:
            self._last_reap = time.time()
            await self.reap_workers()

    @property
    def reap_interval_s(self) -> float:
        config = self.runtime.config
        return min(config.WATCHER_INTERVAL_SECONDS, config.WORKER_HEALTH_CHECK_INTERVAL_SECONDS / 2, 5.0)

    async def _next_at(self) -> float:
        try:
            at = await self.runtime.storage.next_timer_at()
        except Exception:  # storage unreachable: look again soon
            logger.warning("could not read the next timer", exc_info=True)
            at = None
        return at if at is not None else time.time() + MAX_IDLE_S

    async def _fire(self, claim: TimerClaim) -> bool:
        """Carry out a claimed timer; False if it failed (it comes due again after the claim's lease)."""
        kind, ref = parse_timer(claim.timer_id)
        handler = self._handlers.get(kind) if kind is not None else None
        if handler is None:
            logger.error("unknown timer %s: dropped", claim.timer_id)
            return True
        try:
            await handler(ref)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("timer %s failed; it comes due again after its lease", claim.timer_id)
            return False
        return True

    async def reap_workers(self) -> None:
        """Expire the workers that stopped heart-beating; storage hands their tasks on in the same change."""
        for record, task_ids in await self.runtime.storage.expire_workers(time.time()):
            logger.warning("worker %s expired with %d unanswered tasks", record.worker_id, len(task_ids))
            self.runtime.committer.events.publish(worker_expired(record.worker_id, task_ids))
