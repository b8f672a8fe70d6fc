"""Retention: delete old jobs' history now and then, in batches, without ever stopping the engine."""

from __future__ import annotations

import asyncio
import logging

from .base import HistoryStorage

logger = logging.getLogger(__name__)


async def retention_loop(
    history: HistoryStorage, days: float, *, every_s: float = 3600.0, batch_size: int = 1000
) -> None:
    """Every ``every_s`` seconds (first at once), delete jobs with no event for ``days`` days.

    Runs until cancelled; a failed purge (database down) is logged and tried again next time.

    Args:
        history: The open history.
        days: How long a job's history is kept after its last event.
        every_s: Seconds between purges.
        batch_size: Jobs deleted per transaction.
    """
    if days <= 0:
        raise ValueError("days must be > 0 (no retention: do not start the loop)")
    while True:
        try:
            await history.purge_older_than(days, batch_size)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("history: purging jobs older than %g days failed, trying again later: %r", days, exc)
        await asyncio.sleep(every_s)
