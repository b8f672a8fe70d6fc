"""Jobs: the filtered, keyset-paginated list with live rows, and one job's page, live."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from urllib.parse import urlencode

from aiohttp import web

from ..errors import JobNotFound
from ..events import Event, EventKind
from ..models import Job, JobStatus
from .contexts import JobContext, JobsContext
from .data import JobQuery, JobRow
from .graphs import job_marks, svg_markup
from .htmx import htmx
from .keys import data_key, engine_key
from .live import Update, stream_feed
from .render import json_response, render_fragment, render_page, wants_json
from .sse import SseEvent

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
#: The "last ..." choices of the time filter, in seconds.
RANGES_S = {"15m": 900, "1h": 3600, "24h": 86_400, "7d": 7 * 86_400}
FILTER_NAMES = ("blueprint", "status", "state", "q", "last", "from", "to")


def _timestamp(text: str | None) -> float | None:
    """A ``datetime-local`` value (taken as UTC) or UNIX seconds, as UNIX seconds."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def query_of(request: web.Request, now_s: float) -> tuple[JobQuery, dict[str, str]]:
    """The filters of a jobs request, and their raw values to refill the form."""
    raw = {name: request.query.get(name, "").strip() for name in FILTER_NAMES}
    after = _timestamp(raw["from"])
    if raw["last"] in RANGES_S:
        after = max(after or 0.0, now_s - RANGES_S[raw["last"]])
    query = JobQuery(
        blueprint=raw["blueprint"] or None,
        status=raw["status"] or None,
        state=raw["state"] or None,
        id_prefix=raw["q"] or None,
        created_after=after,
        created_before=_timestamp(raw["to"]),
    )
    return query, raw


async def jobs_context(request: web.Request) -> JobsContext:
    engine = request.app[engine_key]
    data = request.app[data_key]
    query, raw = query_of(request, datetime.now(UTC).timestamp())
    cursor = request.query.get("cursor") or None
    page = await data.jobs_page(query, PAGE_SIZE, cursor)
    filled = {k: v for k, v in raw.items() if v}
    next_url = None
    if page.next_cursor is not None:
        next_url = "?" + urlencode({**filled, "cursor": page.next_cursor.encode()})
    chosen = engine.blueprints.get(query.blueprint or "")
    states = list(chosen.states) if chosen else sorted({s for b in engine.blueprints.values() for s in b.states})
    return JobsContext(
        title="Jobs",
        query=query,
        filters=raw,
        rows=page.rows,
        next_url=next_url,
        first_page=cursor is None,
        blueprints=sorted(engine.blueprints),
        states=states,
        statuses=[str(s) for s in JobStatus],
        live_query=urlencode(filled),
        source=data.source.name,
    )


async def jobs_page(request: web.Request) -> web.StreamResponse:
    context = await jobs_context(request)
    if wants_json(request):
        return json_response(context.to_json())
    if htmx(request) and not htmx(request).boosted:
        return await render_fragment(request, "_job_rows.html", context)
    live = f"jobs?{context.live_query}" if context.first_page else None
    return await render_page(request, "jobs.html", context, section="jobs", live=live)


def retry_states(job: Job, blueprint_states: list[str]) -> list[str]:
    """The job's own state first, then the states it visited before, then the rest."""
    visited = [s for s in job.visits if s != job.state and s in blueprint_states]
    others = [s for s in blueprint_states if s != job.state and s not in visited]
    return [job.state, *visited, *others] if job.state in blueprint_states else visited + others


async def job_context(request: web.Request, job: Job) -> JobContext:
    engine = request.app[engine_key]
    detail = await request.app[data_key].job_detail(job)
    blueprint = engine.blueprints.get(job.blueprint)
    svg = await svg_markup(blueprint) if blueprint else None
    return JobContext(
        title=f"Job {job.id[:8]} · {job.blueprint}",
        job=job,
        detail=detail,
        svg=svg if svg is not None else _no_graph(job),
        marks=job_marks(blueprint, job) if blueprint else None,
        retry_states=retry_states(job, list(blueprint.states)) if blueprint else [],
        path=sorted(job.visits.items(), key=lambda item: -item[1]) if len(job.visits) > 8 else list(job.visits.items()),
    )


def _no_graph(job: Job) -> str:
    from markupsafe import Markup, escape

    return Markup('<p class="note warn">Blueprint {} is not registered on this engine.</p>').format(
        escape(job.blueprint)
    )


async def load_job(request: web.Request) -> Job:
    job_id = request.match_info["job_id"]
    job = await request.app[data_key].job(job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


async def job_page(request: web.Request) -> web.StreamResponse:
    job = await load_job(request)
    context = await job_context(request, job)
    if wants_json(request):
        return json_response(context.to_json())
    return await render_page(request, "job.html", context, section="jobs", live=f"jobs/{job.id}")


#: Events that change a job's row or page (progress only changes the panel).
_ROW_KINDS = frozenset(EventKind) - {EventKind.TASK_PROGRESS, EventKind.WORKER_REGISTERED, EventKind.WORKER_EXPIRED}


class JobsFeed:
    """New rows matching the page's filters, and changed rows (replaced where shown)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.query, _ = query_of(request, datetime.now(UTC).timestamp())

    async def snapshot(self) -> list[Update]:
        return []  # the rows were rendered with the page; a reconnect refreshes changed ones as they change

    async def changes(self, events: list[Event]) -> list[Update]:
        created = {e.job_id for e in events if e.kind == EventKind.JOB_CREATED and e.job_id}
        changed = list(dict.fromkeys(e.job_id for e in events if e.kind in _ROW_KINDS and e.job_id))
        updates: list[Update] = []
        for job_id in changed:
            job = await self.request.app[data_key].job(job_id)
            if job is None:
                continue
            row = JobRow.of(job)
            is_new = job_id in created and self.query.matches(row)
            updates.append((SseEvent.JOB_ROW, {"row": row, "new": is_new}))
        return updates


class JobFeed:
    """One job's graph marks, header and panel, after each of its events."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.job_id = request.match_info["job_id"]

    async def snapshot(self) -> list[Update]:
        job = await self.request.app[data_key].job(self.job_id)
        if job is None:
            return []
        context = await job_context(self.request, job)
        updates: list[Update] = [(SseEvent.JOB_HEADER, context), (SseEvent.JOB_PANEL, context)]
        if context.marks is not None:
            updates.insert(0, (SseEvent.JOB_MARKS, context))
        return updates

    async def changes(self, events: list[Event]) -> list[Update]:
        mine = [e for e in events if e.job_id == self.job_id]
        if not mine:
            return []
        updates = await self.snapshot()
        if all(e.kind == EventKind.TASK_PROGRESS for e in mine):
            return [u for u in updates if u[0] == SseEvent.JOB_PANEL]
        return updates


async def jobs_live(request: web.Request) -> web.StreamResponse:
    return await stream_feed(request, JobsFeed(request))


async def job_live(request: web.Request) -> web.StreamResponse:
    return await stream_feed(request, JobFeed(request))


def setup_job_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/jobs", jobs_page, name="jobs")
    router.add_get("/jobs/{job_id}", job_page, name="job")
    router.add_get("/live/jobs", jobs_live, name="live_jobs")
    router.add_get("/live/jobs/{job_id}", job_live, name="live_job")
