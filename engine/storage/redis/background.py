"""Background loops of the Redis storage: stopping them, and backing off between reconnections."""

from __future__ import annotations

import asyncio
import logging
import random

logger = logging.getLogger(__name__)


async def cancel_and_wait(tasks: list[asyncio.Task[None]], timeout_s: float = 5.0) -> None:
    """Cancel background tasks and wait for them, but not forever (see :func:`stop_if_cancelled`)."""
    for task in tasks:
        task.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            logger.error("%s did not stop within %s s of being cancelled", task.get_name(), timeout_s)


class Backoff:
    """Exponential backoff with jitter between reconnection attempts."""

    def __init__(self, first_s: float = 0.05, cap_s: float = 5.0) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.delay_s = first_s

    def reset(self) -> None:
        self.delay_s = self.first_s

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay_s * random.uniform(0.5, 1.0))
        self.delay_s = min(self.cap_s, self.delay_s * 2)


def cancellation_count() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


def stop_if_cancelled(baseline: int = 0) -> None:
    """Raise CancelledError if this task was asked to stop since it had ``baseline`` requests.

    redis-py 8.1 on Python 3.11 can end a cancelled call normally (a blocking read answers None once
    ``asyncio.timeout`` has turned the cancellation into a timeout), so the CancelledError never
    arrives; a loop that goes on waiting would keep its task, and whoever awaits it, forever.
    """
    if cancellation_count() > baseline:
        raise asyncio.CancelledError
