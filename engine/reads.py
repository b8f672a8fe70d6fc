"""Reads that the API and the studio share: a client's live jobs (up to :data:`CLIENT_SCAN_JOBS`),
and job counts for one client or all (kept by storage, whatever the number of jobs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import OrchestratorEngine
    from .models import Job

#: Jobs read per storage call while listing a client's jobs.
SCAN_BATCH = 500
#: The most live jobs of one client listed (and so counted).
CLIENT_SCAN_JOBS = 10_000

#: Jobs per (blueprint, status, state).
JobCounts = dict[tuple[str, str, str], int]


async def client_jobs(engine: OrchestratorEngine, client: str, status: str | None = None) -> list[Job]:
    """The client's live jobs (of ``status`` when given), newest first, at most CLIENT_SCAN_JOBS."""
    found: list[Job] = []
    for offset in range(0, CLIENT_SCAN_JOBS, SCAN_BATCH):
        batch = await engine.list_jobs(client=client, status=status, limit=SCAN_BATCH, offset=offset)
        found += batch
        if len(batch) < SCAN_BATCH:
            break
    return found


async def job_counts(engine: OrchestratorEngine, client: str | None = None) -> JobCounts:
    """Live jobs per (blueprint, status, state): every job's, or only ``client``'s (storage keeps both)."""
    return await engine.storage.count_jobs(client)
