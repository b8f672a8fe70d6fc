"""Quarantine: jobs waiting for a person, grouped by error; release, edit and release, or fail them."""

from __future__ import annotations

import logging

from aiohttp import web

from ..errors import AvtomatikaError
from ..events import Event, EventKind
from ..models import Job, JobStatus
from ..reads import JobDetail
from .actions import done, owned_job, parse_params
from .contexts import QuarantineContext, QuarantineGroup
from .keys import data_key, engine_key
from .live import Update, stream_feed
from .middleware import StudioError
from .render import json_response, render_page, user_of, wants_json
from .sse import SseEvent

logger = logging.getLogger(__name__)

_LEAVES = frozenset({EventKind.JOB_RELEASED, EventKind.JOB_RETRIED, EventKind.JOB_FAILED, EventKind.JOB_CANCELLED})


def grouped(items: list[JobDetail]) -> list[QuarantineGroup]:
    groups: dict[str, list[JobDetail]] = {}
    for item in items:
        groups.setdefault(item.job.error or "no error message", []).append(item)
    return [QuarantineGroup(error, found) for error, found in sorted(groups.items(), key=lambda g: -len(g[1]))]


async def quarantine_page(request: web.Request) -> web.StreamResponse:
    items = await request.app[data_key].quarantined(client=user_of(request).scope)
    context = QuarantineContext(title=f"Quarantine ({len(items)})", groups=grouped(items), total=len(items))
    if wants_json(request):
        return json_response(context.to_json())
    return await render_page(request, "quarantine.html", context, section="quarantine", live="quarantine")


async def _apply(request: web.Request, action: str, job_id: str, params_text: str | None, reason: str) -> Job:
    engine = request.app[engine_key]
    actor = user_of(request).actor
    await owned_job(request, job_id)
    if action == "release":
        return await engine.release_job(job_id, actor=actor, params=parse_params(request, params_text))
    if action == "fail":
        return await engine.fail_job(job_id, actor=actor, reason=reason or None)
    raise StudioError(400, "Bad request", f"Unknown action {action!r}; expected release or fail.")


async def quarantine_action(request: web.Request) -> web.StreamResponse:
    """POST: release or fail the selected jobs (``job_id`` repeated); params apply to each."""
    form = await request.post()
    action = str(form.get("action") or "")
    job_ids = [str(j) for j in form.getall("job_id", [])]
    if not job_ids:
        raise StudioError(400, "Nothing selected", "Select at least one job.")
    params_text = form.get("params")
    reason = str(form.get("reason") or "").strip()
    done_jobs: list[Job] = []
    problems: list[str] = []
    for job_id in job_ids:
        try:
            done_jobs.append(await _apply(request, action, job_id, str(params_text) if params_text else None, reason))
        except StudioError:
            raise
        except AvtomatikaError as exc:
            problems.append(str(exc))
    logger.info("studio: %s %s %d quarantined jobs", user_of(request).actor, action, len(done_jobs))
    verb = "Released" if action == "release" else "Failed"
    message = f"{verb} {len(done_jobs)} job{'s' if len(done_jobs) != 1 else ''}."
    if problems:
        message += " Not done: " + "; ".join(problems)
    return await done(request, message, done_jobs)


class QuarantineFeed:
    """Newly quarantined jobs (added on top) and jobs leaving quarantine (their item replaced)."""

    def __init__(self, request: web.Request) -> None:
        self.request = request

    async def snapshot(self) -> list[Update]:
        items = await self.request.app[data_key].quarantined(client=user_of(self.request).scope)
        return [(SseEvent.QUARANTINE_ITEM, {"item": item, "new": True}) for item in items]

    async def changes(self, events: list[Event]) -> list[Update]:
        data = self.request.app[data_key]
        updates: list[Update] = []
        ids = dict.fromkeys(e.job_id for e in events if e.job_id and e.kind in (_LEAVES | {EventKind.JOB_QUARANTINED}))
        for job_id in ids:
            job = await data.job(job_id)
            if job is None or not user_of(self.request).sees(job.client):
                continue
            detail = JobDetail(job, await self.request.app[engine_key].current_tasks(job), None)
            updates.append((SseEvent.QUARANTINE_ITEM, {"item": detail, "new": job.status == JobStatus.QUARANTINED}))
        return updates


async def quarantine_live(request: web.Request) -> web.StreamResponse:
    return await stream_feed(request, QuarantineFeed(request))


def setup_quarantine_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/quarantine", quarantine_page, name="quarantine")
    router.add_post("/quarantine", quarantine_action, name="quarantine_action")
    router.add_get("/live/quarantine", quarantine_live, name="live_quarantine")
