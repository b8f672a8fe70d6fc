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
from .data import JobDetail, JobQuery, JobRow
from .graphs import job_marks, svg_markup
from .htmx import htmx
from .keys import data_key, engine_key
from .live import Update, stream_feed
from .render import json_response, render_fragment, render_page, user_of, wants_json
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
        client=user_of(request).scope,
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
        history_pending=page.history_pending,
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


async def job_context(request: web.Request, detail: JobDetail) -> JobContext:
    """The job page's context; a job known only from history gets its graph without marks and no actions."""
    engine = request.app[engine_key]
    job = detail.job
    blueprint = engine.blueprints.get(job.blueprint)
    svg = await svg_markup(blueprint) if blueprint else None
    live = blueprint is not None and not detail.from_history
    return JobContext(
        title=f"Job {job.id[:8]} · {job.blueprint}",
        job=job,
        detail=detail,
        svg=svg if svg is not None else _no_graph(job),
        marks=job_marks(blueprint, job) if live and blueprint else None,
        retry_states=retry_states(job, list(blueprint.states)) if live and blueprint else [],
        path=sorted(job.visits.items(), key=lambda item: -item[1]) if len(job.visits) > 8 else list(job.visits.items()),
    )


def _no_graph(job: Job) -> str:
    from markupsafe import Markup, escape

    return Markup('<p class="note warn">Blueprint {} is not registered on this engine.</p>').format(
        escape(job.blueprint)
    )


async def load_detail(request: web.Request) -> JobDetail:
    """The job of the URL: live from the engine, else from history (its live record was forgotten)."""
    job_id = request.match_info["job_id"]
    data = request.app[data_key]
    job = await data.job(job_id)
    detail = await data.job_detail(job) if job is not None else await data.archived(job_id)
    if detail is None or not user_of(request).sees(detail.job.client):
        raise JobNotFound(job_id)  # another client's job is as unknown as a missing one
    return detail


async def job_page(request: web.Request) -> web.StreamResponse:
    detail = await load_detail(request)
    context = await job_context(request, detail)
    if wants_json(request):
        return json_response(context.to_json())
    return await render_page(request, "job.html", context, section="jobs", live=f"jobs/{detail.job.id}")


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
            if not user_of(self.request).sees(row.client):
                continue
            is_new = job_id in created and self.query.matches(row)
            updates.append((SseEvent.JOB_ROW, {"row": row, "new": is_new}))
        return updates


class JobFeed:
    """One job's graph marks, header, panel and timeline, after each of its events.

    The whole timeline is sent when the stream (re)connects; after that, only the lines history
    recorded since the last one sent (``last_seq``), read after flushing history's writer.
    """

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.job_id = request.match_info["job_id"]
        self.last_seq = 0

    async def _parts(self, job: Job, *, timeline: bool) -> tuple[JobContext, list[Update]]:
        detail = await self.request.app[data_key].job_detail(job, timeline=timeline)
        context = await job_context(self.request, detail)
        updates: list[Update] = [(SseEvent.JOB_HEADER, context), (SseEvent.JOB_PANEL, context)]
        if context.marks is not None:
            updates.insert(0, (SseEvent.JOB_MARKS, context))
        return context, updates

    async def snapshot(self) -> list[Update]:
        job = await self.request.app[data_key].job(self.job_id)
        if job is None:
            return []
        context, updates = await self._parts(job, timeline=True)
        timeline = context.detail.timeline
        if timeline is not None:
            self.last_seq = max((line.seq for line in timeline), default=self.last_seq)
            updates.append((SseEvent.TIMELINE, context))
        return updates

    async def changes(self, events: list[Event]) -> list[Update]:
        mine = [e for e in events if e.job_id == self.job_id]
        if not mine:
            return []
        data = self.request.app[data_key]
        job = await data.job(self.job_id)
        if job is None:
            return []
        _, updates = await self._parts(job, timeline=False)  # only the new lines are read, below
        if all(e.kind == EventKind.TASK_PROGRESS for e in mine):  # progress is not recorded in history
            return [u for u in updates if u[0] == SseEvent.JOB_PANEL]
        lines = await data.timeline(self.job_id, self.last_seq)
        if lines:
            self.last_seq = lines[-1].seq
            updates.append((SseEvent.TIMELINE_LINES, {"lines": lines}))
        return updates


async def jobs_live(request: web.Request) -> web.StreamResponse:
    return await stream_feed(request, JobsFeed(request))


async def job_live(request: web.Request) -> web.StreamResponse:
    await load_detail(request)  # 404 for an unknown job, or another client's
    return await stream_feed(request, JobFeed(request))


def setup_job_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/jobs", jobs_page, name="jobs")
    router.add_get("/jobs/{job_id}", job_page, name="job")
    router.add_get("/live/jobs", jobs_live, name="live_jobs")
    router.add_get("/live/jobs/{job_id}", job_live, name="live_job")
