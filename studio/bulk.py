"""Bulk actions in the studio: review, start, follow and cancel an action on many jobs.

- ``POST /bulk/review``: the posted bulk form checked, and the confirm it needs ("Release 12 jobs with
  edited params?", with a release's edit as a diff on one selected job); problems named by field.
- ``POST /bulk``: start it through the engine's bulk actions (:class:`~avtomatika.runtime.bulk.BulkActions`), at
  the rate asked for; the answer is its progress.
- ``GET /bulk``: recent bulk actions; ``GET /bulk/{bulk_id}``: one, whose progress polls itself while it
  runs (htmx ``every 1s``); ``POST /bulk/{bulk_id}/cancel`` stops it before its next job.

A client's session (which acts on its own jobs only) sees the bulk actions it started, no others.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from avtomatika.errors import BulkRefused
from avtomatika.models import BulkAction
from avtomatika.studio.app_keys import data_key, engine_key, prefix_key
from avtomatika.studio.bulk_form import read_form, sample_of
from avtomatika.studio.contexts import BulkContext, BulkListContext, BulkReviewContext, bulk_json
from avtomatika.studio.htmx import htmx, trigger
from avtomatika.studio.middleware import StudioError
from avtomatika.studio.render import fragment_or_json, json_response, page_or_json, render_fragment, user_of, wants_json

routes = web.RouteTableDef()

logger = logging.getLogger(__name__)

#: Bulk actions the list shows.
LISTED = 50
#: Fired in the page when a bulk action started (the selection is cleared).
STARTED_EVENT = "bulk-started"


async def _review(request: web.Request) -> BulkReviewContext:
    form = await read_form(request, await request.post())
    sample = None if form.errors else await sample_of(request, form)
    return BulkReviewContext(form, sample)


async def _answer_review(request: web.Request, review: BulkReviewContext) -> web.StreamResponse:
    return await fragment_or_json(request, "_bulk_review.html", review, 422 if review.form.errors else 200)


@routes.post("/bulk/review", name="bulk_review")
async def bulk_review(request: web.Request) -> web.StreamResponse:
    return await _answer_review(request, await _review(request))


@routes.post("/bulk", name="bulk_start")
async def bulk_start(request: web.Request) -> web.StreamResponse:
    review = await _review(request)
    form = review.form
    if form.errors:
        return await _answer_review(request, review)
    session = user_of(request)
    try:
        action = await request.app[engine_key].bulk.start(
            form.kind, form.job_ids, rate_per_s=form.rate_per_s, actor=session.actor, **form.options
        )
    except BulkRefused as exc:
        form.errors[exc.field] = exc.reason
        return await _answer_review(request, review)
    logger.info("studio: %s started bulk %s %s of %d jobs", session.actor, action.id, action.kind, action.total)
    if wants_json(request):
        return json_response(bulk_json(action), 201)
    if htmx(request):
        response = await render_fragment(request, "_bulk_progress.html", BulkContext("", action, time.time()))
        return trigger(response, STARTED_EVENT, {"id": action.id})
    raise web.HTTPSeeOther(f"{request.app[prefix_key]}/bulk/{action.id}")


async def _visible(request: web.Request) -> BulkAction:
    """The bulk action of the URL, if this session may see it (a client's session: its own)."""
    action = await request.app[engine_key].bulk.get(request.match_info["bulk_id"])
    session = user_of(request)
    if session.scope is not None and action.actor != session.actor:
        raise StudioError(404, "Not found", f"Bulk action '{action.id}' not found")
    return action


async def _answer(request: web.Request, action: BulkAction) -> web.StreamResponse:
    context = BulkContext(f"Bulk {action.kind} ({action.status})", action, time.time())
    return await page_or_json(request, "bulk_action.html", context, section="bulk", partial="_bulk_progress.html")


@routes.get("/bulk/{bulk_id}", name="bulk")
async def bulk_page(request: web.Request) -> web.StreamResponse:
    return await _answer(request, await _visible(request))


@routes.post("/bulk/{bulk_id}/cancel", name="bulk_cancel")
async def bulk_cancel(request: web.Request) -> web.StreamResponse:
    action = await _visible(request)
    action = await request.app[engine_key].bulk.cancel(action.id, user_of(request).actor)
    if wants_json(request) or htmx(request):
        return await _answer(request, action)
    raise web.HTTPSeeOther(f"{request.app[prefix_key]}/bulk/{action.id}")


@routes.get("/bulk", name="bulk_list")
async def bulk_list(request: web.Request) -> web.StreamResponse:
    session = user_of(request)
    found = await request.app[data_key].bulk_actions(LISTED)
    if session.scope is not None:
        found = [a for a in found if a.actor == session.actor]
    context = BulkListContext("Bulk actions", found)
    return await page_or_json(request, "bulk.html", context, section="bulk")
