"""One job's page: the graph it ran on with exactly the edges it took, a timeline every line of which
opens, its fan-out's branches, a state's visits on a click, time travel over its history, live.

The timeline (history) is the source of the path, the branches and the past; live storage of the
job's current state, status and tasks. A job live storage no longer keeps (ended and forgotten, or
lost with an engine that kept it in memory) is shown from history alone.
"""

from __future__ import annotations

import logging

from aiohttp import web

from avtomatika.errors import JobNotFound
from avtomatika.events import Event, EventKind
from avtomatika.models import ENDED_STATUSES, Job
from avtomatika.reads import JobDetail, Line, Timeline
from avtomatika.studio.app_keys import data_key, engine_key
from avtomatika.studio.breakpoint_data import mark_breakpoints
from avtomatika.studio.contexts import JobContext, MomentContext, StateContext
from avtomatika.studio.graphs import JobGraph, moment_path, path_of, version_diff
from avtomatika.studio.hold import hold_panel
from avtomatika.studio.live import Update, stream_feed
from avtomatika.studio.middleware import StudioError
from avtomatika.studio.partial_contexts import TimelineLinesContext, TimelineRowsContext
from avtomatika.studio.render import fragment_or_json, page_or_json, user_of
from avtomatika.studio.sse import SseEvent

routes = web.RouteTableDef()

logger = logging.getLogger(__name__)


async def load_detail(request: web.Request, *, tasks: bool = True) -> JobDetail:
    """The job of the URL: live from the engine, else from history (its live record is gone)."""
    job_id = request.match_info["job_id"]
    detail = await request.app[data_key].detail(job_id, tasks=tasks)
    if detail is None or not user_of(request).sees(detail.job.client):
        raise JobNotFound(job_id)  # another client's job is as unknown as a missing one
    return detail


def retry_states(job: Job, blueprint_states: list[str]) -> list[str]:
    """The job's own state first, then the states it visited before, then the rest."""
    visited = [s for s in job.visits if s != job.state and s in blueprint_states]
    others = [s for s in blueprint_states if s != job.state and s not in visited]
    return [job.state, *visited, *others] if job.state in blueprint_states else visited + others


async def job_context(request: web.Request, detail: JobDetail, graph: JobGraph | None = None) -> JobContext:
    """The job page's context; a job known only from history gets no actions."""
    engine = request.app[engine_key]
    job = detail.job
    graph = graph or await JobGraph.of(engine, detail)
    blueprint = engine.blueprints.get(job.blueprint)
    live = blueprint is not None and not detail.from_history
    timeline = detail.timeline
    last = timeline.visits[-1] if timeline is not None and timeline.visits else None
    fanned = last is not None and last.fan_out
    versions = graph.ran_on is not None and graph.today is not None and graph.ran_on.version != graph.today.version
    visits = sorted(job.visits.items(), key=lambda item: -item[1]) if len(job.visits) > 8 else list(job.visits.items())
    # An ended job is held by no breakpoint any more: no panel, none drawn.
    hold = await hold_panel(request, job) if live and job.status not in ENDED_STATUSES else None
    marks = graph.marks(path_of(job, timeline))
    if marks is not None and hold is not None:
        marks = mark_breakpoints(marks, hold.breakpoints)
    return JobContext(
        title=f"Job {job.id[:8]} · {job.blueprint}",
        job=job,
        detail=detail,
        svg=await graph.svg(job),
        marks=marks,
        retry_states=retry_states(job, list(blueprint.states)) if live and blueprint else [],
        path=visits,
        rows=timeline.rows() if timeline is not None else [],
        branches=last.branches if fanned and last is not None else [],
        fan_out=last.counts if fanned and last is not None else None,
        version=version_diff(graph.ran_on, graph.today) if versions and graph.ran_on and graph.today else None,
        graph_note=graph.note,
        hold=hold,
    )


@routes.get("/jobs/{job_id}", name="job")
async def job_page(request: web.Request) -> web.StreamResponse:
    detail = await load_detail(request)
    context = await job_context(request, detail)
    return await page_or_json(request, "job.html", context, section="jobs", live=f"jobs/{detail.job.id}")


def _seq(request: web.Request) -> int:
    try:
        return int(request.query.get("seq", ""))
    except ValueError:
        raise StudioError(400, "Bad request", "seq (the timeline line to travel to) must be an integer.") from None


@routes.get("/jobs/{job_id}/at", name="job_moment")
async def moment_page(request: web.Request) -> web.StreamResponse:
    """Time travel: the job as it was right after line ``?seq=`` of its timeline (a fragment, or JSON)."""
    detail = await load_detail(request, tasks=False)
    timeline = detail.timeline
    if timeline is None or not timeline.lines:
        raise StudioError(404, "No timeline", "History has no line of this job yet.")
    moment = timeline.at(_seq(request))
    graph = await JobGraph.of(request.app[engine_key], detail)
    context = MomentContext(detail.job, moment, graph.marks(moment_path(moment)), timeline.last_seq)
    return await fragment_or_json(request, "_moment.html", context)


@routes.get("/jobs/{job_id}/states/{state}", name="job_state")
async def state_page(request: web.Request) -> web.StreamResponse:
    """A click on a state: the job's visits of it, with handlers, tasks, inputs and outputs."""
    detail = await load_detail(request, tasks=False)
    state = request.match_info["state"]
    visits = detail.timeline.visits_of(state) if detail.timeline is not None else []
    context = StateContext(detail.job, state, visits)
    return await fragment_or_json(request, "_state_visits.html", context)


class JobFeed:
    """One job's graph marks, header, panel and timeline, after each of its events.

    The whole timeline is sent when the stream (re)connects; after that, only the lines history
    recorded since (read after history's writer caught up), and the compact timeline again.
    """

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.job_id = request.match_info["job_id"]
        self.timeline = Timeline()
        self.graph: JobGraph | None = None

    async def _parts(self, detail: JobDetail) -> tuple[JobContext, list[Update]]:
        if self.graph is None:
            self.graph = await JobGraph.of(self.request.app[engine_key], detail)
        context = await job_context(self.request, detail, self.graph)
        updates: list[Update] = [
            (SseEvent.JOB_HEADER, context),
            (SseEvent.JOB_HOLD, context),
            (SseEvent.JOB_PANEL, context),
            (SseEvent.JOB_BRANCHES, context),
        ]
        if context.marks is not None:
            updates.insert(0, (SseEvent.JOB_MARKS, context))
        return context, updates

    async def snapshot(self) -> list[Update]:
        detail = await self.request.app[data_key].detail(self.job_id)
        if detail is None:
            return []
        self.timeline = detail.timeline or Timeline()
        detail.timeline = self.timeline
        context, updates = await self._parts(detail)
        if detail.timeline is not None:
            updates.append((SseEvent.TIMELINE, context))
        return updates

    async def changes(self, events: list[Event]) -> list[Update]:
        mine = [e for e in events if e.job_id == self.job_id]
        if not mine:
            return []
        reads = self.request.app[data_key]
        job = await reads.job(self.job_id)
        if job is None:
            return []
        progress_only = all(e.kind == EventKind.TASK_PROGRESS for e in mine)  # progress is not in history
        added: list[Line] = []
        # Rows from the visit under way on: those new lines can change (its time in state, its tasks).
        since = self.timeline.visits[-1].entered_seq if self.timeline.visits else 0
        if not progress_only:
            added = self.timeline.extend(await reads.timeline(self.job_id, self.timeline.last_seq) or [])
        detail = JobDetail(job, await self.request.app[engine_key].current_tasks(job), self.timeline)
        detail.blueprint_version = self.timeline.blueprint_version
        context, updates = await self._parts(detail)
        if progress_only:
            return [u for u in updates if u[0] == SseEvent.JOB_PANEL]
        if added:
            updates.append((SseEvent.TIMELINE_LINES, TimelineLinesContext(added, self.timeline, job.created_at)))
            rows = [row for row in context.rows if row.seq >= since]
            updates.append((SseEvent.TIMELINE_ROWS, TimelineRowsContext(rows, detail, job, new=True)))
        return updates


@routes.get("/live/jobs/{job_id}", name="live_job")
async def job_live(request: web.Request) -> web.StreamResponse:
    await load_detail(request, tasks=False)  # 404 for an unknown job, or another client's
    return await stream_feed(request, JobFeed(request))
