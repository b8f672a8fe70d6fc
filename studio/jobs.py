"""Jobs: the filtered, keyset-paginated list, with live rows."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlencode

from aiohttp import web

from avtomatika.events import Event, EventKind
from avtomatika.models import JobStatus
from avtomatika.reads import JobRow
from avtomatika.runtime.bulk import MAX_JOBS
from avtomatika.studio.app_keys import data_key, engine_key
from avtomatika.studio.bulk_form import DEFAULT_RATE_PER_S, JOBS_LIST_OPERATIONS
from avtomatika.studio.contexts import JobsContext
from avtomatika.studio.filters import query_of
from avtomatika.studio.live import Update, stream_feed
from avtomatika.studio.partial_contexts import JobRowContext
from avtomatika.studio.render import page_or_json, user_of
from avtomatika.studio.sse import SseEvent

routes = web.RouteTableDef()

logger = logging.getLogger(__name__)

PAGE_SIZE = 50


async def jobs_context(request: web.Request) -> JobsContext:
    engine = request.app[engine_key]
    reads = request.app[data_key]
    query, raw = query_of(request, time.time())
    cursor = request.query.get("cursor") or None
    page = await reads.jobs_page(query, PAGE_SIZE, cursor)
    filled = {k: v for k, v in raw.items() if v}
    next_url = None
    if page.next_cursor is not None:
        next_url = "?" + urlencode({**filled, "cursor": page.next_cursor.encode()})
    chosen = engine.blueprints.get(query.blueprint or "")
    states = list(chosen.states) if chosen else sorted({s for b in engine.blueprints.values() for s in b.states})
    return JobsContext(
        title="Jobs",
        filters=raw,
        rows=page.rows,
        next_url=next_url,
        first_page=cursor is None,
        blueprints=sorted(engine.blueprints),
        states=states,
        statuses=[str(s) for s in JobStatus],
        live_query=urlencode(filled),
        source=page.source,
        history_pending=page.history_pending,
        operations=JOBS_LIST_OPERATIONS,
        rate_per_s=DEFAULT_RATE_PER_S,
        max_jobs=MAX_JOBS,
    )


@routes.get("/jobs", name="jobs")
async def jobs_page(request: web.Request) -> web.StreamResponse:
    context = await jobs_context(request)
    live = f"jobs?{context.live_query}" if context.first_page else None
    return await page_or_json(request, "jobs.html", context, section="jobs", live=live, partial="_job_rows.html")


#: Events that change a job's row (progress only changes its page's panel).
ROW_KINDS = frozenset(EventKind) - {EventKind.TASK_PROGRESS, EventKind.WORKER_REGISTERED, EventKind.WORKER_EXPIRED}


class JobsFeed:
    """New rows matching the page's filters, and changed rows (replaced where shown)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.query, _ = query_of(request, time.time())

    async def snapshot(self) -> list[Update]:
        return []  # the rows were rendered with the page; a reconnect refreshes changed ones as they change

    async def changes(self, events: list[Event]) -> list[Update]:
        created = {e.job_id for e in events if e.kind == EventKind.JOB_CREATED and e.job_id}
        changed = list(dict.fromkeys(e.job_id for e in events if e.kind in ROW_KINDS and e.job_id))
        updates: list[Update] = []
        for job_id in changed:
            job = await self.request.app[data_key].job(job_id)
            if job is None:
                continue
            row = JobRow.of(job)
            if not user_of(self.request).sees(row.client):
                continue
            is_new = job_id in created and self.query.matches(row)
            updates.append((SseEvent.JOB_ROW, JobRowContext(row, is_new)))
        return updates


@routes.get("/live/jobs", name="live_jobs")
async def jobs_live(request: web.Request) -> web.StreamResponse:
    return await stream_feed(request, JobsFeed(request))
