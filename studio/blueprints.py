"""Blueprints: every graph with live counts per state; one blueprint's page with its start form."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web
from pydantic import ValidationError

from avtomatika.api.errors import ApiError
from avtomatika.api.limits import check_size, job_attempt
from avtomatika.blueprint import StateMachineBlueprint
from avtomatika.errors import UnknownBlueprint
from avtomatika.events import Event, EventKind
from avtomatika.graph import GraphModel, extract
from avtomatika.reads import BranchCounts, Counts, Reader
from avtomatika.studio.app_keys import data_key, engine_key, limiter_key, prefix_key
from avtomatika.studio.breakpoint_data import mark_breakpoints, visible_breakpoints
from avtomatika.studio.contexts import BlueprintCard, BlueprintContext, BlueprintsContext
from avtomatika.studio.forms import JSON_FIELD, StartForm, parse_start, refused, start_form
from avtomatika.studio.graphs import counts_marks, svg_markup
from avtomatika.studio.htmx import htmx, redirect
from avtomatika.studio.live import Update, stream_feed
from avtomatika.studio.marks import GraphMarks
from avtomatika.studio.partial_contexts import BlueprintMarksContext
from avtomatika.studio.render import (
    json_response,
    page_or_json,
    render_fragment,
    render_page,
    user_of,
    wants_json,
)
from avtomatika.studio.sse import SseEvent

routes = web.RouteTableDef()

logger = logging.getLogger(__name__)

#: Events that do not move a job between states or statuses (no count changes).
_QUIET = frozenset({EventKind.TASK_PROGRESS, EventKind.TASK_TAKEN, EventKind.WORKER_REGISTERED})


def blueprint_named(request: web.Request) -> StateMachineBlueprint:
    name = request.match_info["name"]
    blueprint = request.app[engine_key].blueprints.get(name)
    if blueprint is None:
        raise UnknownBlueprint(name)
    return blueprint


@dataclass(slots=True)
class LiveCounts:
    """One blueprint's jobs now: in flight per state and status, ended ones (history; an operator's
    view only), the branches of its fan-outs under way."""

    in_flight: dict[str, dict[str, int]]
    ended: dict[str, dict[str, int]]
    fan_outs: dict[str, BranchCounts]

    @classmethod
    async def read(cls, reads: Reader, blueprint: str, scope: str | None, in_flight: Counts) -> LiveCounts:
        ended = await reads.ended_counts(blueprint) if scope is None else {}
        return cls(in_flight.get(blueprint, {}), ended, await reads.fan_outs(blueprint, scope))

    def marks(self, model: GraphModel) -> GraphMarks:
        return counts_marks(model, self.in_flight, self.ended, self.fan_outs)


async def card(request: web.Request, blueprint: StateMachineBlueprint, in_flight: Counts) -> BlueprintCard:
    """A blueprint with its graph: jobs in flight per state (badges), ended ones (notes), fan-outs."""
    live = await LiveCounts.read(request.app[data_key], blueprint.name, user_of(request).scope, in_flight)
    model = extract(blueprint)
    breakpoints = await visible_breakpoints(request, blueprint.name)
    return BlueprintCard(
        name=blueprint.name,
        description=blueprint.description or "",
        version=blueprint.version,
        svg=await svg_markup(model),
        marks=mark_breakpoints(live.marks(model), breakpoints),
        states=list(blueprint.states),
        has_input_model=blueprint.input_model is not None,
        in_flight=live.in_flight,
        ended=live.ended,
        fan_outs=live.fan_outs,
        breakpoints=breakpoints,
    )


@routes.get("/blueprints", name="blueprints")
async def blueprints_page(request: web.Request) -> web.StreamResponse:
    engine = request.app[engine_key]
    in_flight = await request.app[data_key].counts(user_of(request).scope, in_flight=True)
    cards = [await card(request, b, in_flight) for b in sorted(engine.blueprints.values(), key=lambda b: b.name)]
    context = BlueprintsContext(title="Blueprints", cards=cards)
    return await page_or_json(request, "blueprints.html", context, section="blueprints", live="blueprints")


@routes.get("/blueprints/{name}", name="blueprint")
async def blueprint_page(request: web.Request, form: StartForm | None = None, status: int = 200) -> web.StreamResponse:
    blueprint = blueprint_named(request)
    in_flight = await request.app[data_key].counts(user_of(request).scope, in_flight=True)
    context = BlueprintContext(
        title=f"Start {blueprint.name}",
        card=await card(request, blueprint, in_flight),
        form=form or start_form(blueprint),
    )
    if wants_json(request):
        return json_response(context.to_json(), status)
    if htmx(request) and form is not None:
        return await render_fragment(request, "_start_form.html", context, status)
    response = await render_page(request, "blueprint.html", context, section="blueprints", live="blueprints")
    response.set_status(status)
    return response


@routes.post("/blueprints/{name}/jobs", name="start_job")
async def start_job(request: web.Request) -> web.StreamResponse:
    """POST: create a job from the start form; the form comes back with inline errors if refused."""
    blueprint = blueprint_named(request)
    engine = request.app[engine_key]
    data, form = parse_start(blueprint, await request.post(), engine.config.MAX_JSON_DEPTH)
    if form.errors:
        return await blueprint_page(request, form, 422)
    session = user_of(request)
    try:
        # The API's checks: initial_data's size, and a client's monthly attempts.
        check_size(request.app[limiter_key].limits, "initial_data", data)
        with job_attempt(engine.access, engine.access.client_by_name(session.scope)):
            # A client's session starts jobs it owns; an operator's are owned by no client.
            job = await engine.create_job(blueprint.name, data, client=session.scope, actor=session.actor)
    except ValidationError as exc:
        return await blueprint_page(request, refused(form, exc), 422)
    except ApiError as exc:
        form.errors[JSON_FIELD] = exc.message
        return await blueprint_page(request, form, exc.status)
    logger.info("studio: %s started job %s of %s", session.actor, job.id, blueprint.name)
    url = f"{request.app[prefix_key]}/jobs/{job.id}"
    if wants_json(request):
        return json_response({"id": job.id, "url": url}, 201)
    return redirect(request, url)


class BlueprintsFeed:
    """Count badges of every blueprint, recounted when jobs move."""

    def __init__(self, request: web.Request) -> None:
        self.request = request

    async def snapshot(self) -> list[Update]:
        engine = self.request.app[engine_key]
        reads, scope = self.request.app[data_key], user_of(self.request).scope
        in_flight = await reads.counts(scope, in_flight=True)
        breakpoints = await visible_breakpoints(self.request)
        marks = []
        for blueprint in engine.blueprints.values():
            live = await LiveCounts.read(reads, blueprint.name, scope, in_flight)
            mine = [bp for bp in breakpoints if bp.blueprint == blueprint.name]
            marks.append(mark_breakpoints(live.marks(extract(blueprint)), mine))
        return [(SseEvent.BLUEPRINT_MARKS, BlueprintMarksContext(marks))]

    async def changes(self, events: list[Event]) -> list[Update]:
        if all(e.kind in _QUIET or e.job_id is None for e in events):
            return []
        return await self.snapshot()


@routes.get("/live/blueprints", name="live_blueprints")
async def blueprints_live(request: web.Request) -> web.StreamResponse:
    return await stream_feed(request, BlueprintsFeed(request))
