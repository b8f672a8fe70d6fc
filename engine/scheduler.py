"""Time-driven work: retry backoffs, task timeouts and expired workers.

Timers live in storage and each is claimed by exactly one engine process, so with several
processes on one Redis a timeout is handled once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from .events import Event, EventKind

if TYPE_CHECKING:
    from .engine import OrchestratorEngine

logger = logging.getLogger(__name__)

#: Longest sleep between looks at the timers; bounds how late a timer set elsewhere can fire.
MAX_IDLE_S = 0.25


class Scheduler:
    def __init__(self, engine: OrchestratorEngine) -> None:
        self.engine = engine
        self._last_reap = 0.0

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("scheduler tick failed")
            next_at = await self._next_at()
            await asyncio.sleep(max(0.005, min(MAX_IDLE_S, next_at - time.time())))

    async def tick(self) -> None:
        storage = self.engine.storage
        for timer_id in await storage.pop_due_timers(time.time()):
            await self._fire(timer_id)
        if time.time() - self._last_reap >= self.reap_interval_s:
            self._last_reap = time.time()
            await self.reap_workers()

    @property
    def reap_interval_s(self) -> float:
        config = self.engine.config
        return min(config.WATCHER_INTERVAL_SECONDS, config.WORKER_HEALTH_CHECK_INTERVAL_SECONDS / 2, 5.0)

    async def _next_at(self) -> float:
        at = await self.engine.storage.next_timer_at()
        return at if at is not None else time.time() + MAX_IDLE_S

    async def _fire(self, timer_id: str) -> None:
        kind, _, ref = timer_id.partition(":")
        try:
            if kind == "timeout":
                await self.engine.results.task_timed_out(ref)
            elif kind == "retry_task":
                await self.engine.results.retry_due(ref)
            elif kind == "retry_job":
                await self.engine.operations.retry_step_due(ref)
            else:
                logger.error("unknown timer %s", timer_id)
        except Exception:
            logger.exception("timer %s failed", timer_id)

    async def reap_workers(self) -> None:
        for record, task_ids in await self.engine.storage.pop_expired_workers(time.time()):
            logger.warning("worker %s expired with %d unanswered tasks", record.worker_id, len(task_ids))
            self.engine.events.publish(
                Event(EventKind.WORKER_EXPIRED, data={"worker_id": record.worker_id, "task_ids": task_ids})
            )
            await self.engine.results.worker_lost(record.worker_id, task_ids)
