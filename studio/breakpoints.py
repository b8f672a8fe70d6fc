"""Breakpoints on a blueprint's page: a click on a state opens its panel, where an operator holds every
new job of the blueprint before that state's handler runs (or removes such a breakpoint).

Breakpoints are drawn on every graph (a red outline and dot: :func:`~.breakpoint_data.mark_breakpoints`), and listed
under the blueprint's graph with a remove button each. A client's session sees and removes only the
breakpoints of its own jobs, as the API lets a client do; breakpoints on every job are an operator's.
"""

from __future__ import annotations

import logging

from aiohttp import web

from avtomatika.errors import BreakpointNotFound
from avtomatika.studio.app_keys import data_key, engine_key, prefix_key
from avtomatika.studio.blueprints import blueprint_named, card
from avtomatika.studio.breakpoint_data import visible_breakpoints
from avtomatika.studio.contexts import BlueprintBreakpoints, BlueprintStateContext
from avtomatika.studio.htmx import htmx
from avtomatika.studio.middleware import StudioError
from avtomatika.studio.partial_contexts import StatePanelContext
from avtomatika.studio.render import json_response, render_fragment, user_of, wants_json

routes = web.RouteTableDef()

logger = logging.getLogger(__name__)


def state_named(request: web.Request) -> tuple[str, str]:
    """The blueprint and state of the URL (404 for a state the blueprint does not have)."""
    blueprint = blueprint_named(request)
    state = request.match_info["state"]
    if state not in blueprint.states:
        raise StudioError(404, "Not found", f"Blueprint '{blueprint.name}' has no state '{state}'.")
    return blueprint.name, state


async def state_context(request: web.Request, blueprint: str, state: str) -> BlueprintStateContext:
    in_flight = await request.app[data_key].counts(user_of(request).scope, in_flight=True)
    statuses = in_flight.get(blueprint, {}).get(state, {})
    here = [bp for bp in await visible_breakpoints(request, blueprint) if bp.state == state]
    return BlueprintStateContext(blueprint, state, here, sum(statuses.values()))


@routes.get("/blueprints/{name}/states/{state}", name="blueprint_state")
async def state_panel(request: web.Request) -> web.StreamResponse:
    """A click on a state of the blueprint's graph: its breakpoints, and the jobs in it now."""
    context = await state_context(request, *state_named(request))
    if wants_json(request):
        return json_response(context.to_json())
    return await render_fragment(request, "_state_breakpoint.html", StatePanelContext(context))


async def _answer(request: web.Request, blueprint: str, state: str | None, message: str) -> web.StreamResponse:
    """After a change: the blueprint's breakpoints (with the graph's marks) for htmx, JSON, or a redirect."""
    engine = request.app[engine_key]
    in_flight = await request.app[data_key].counts(user_of(request).scope, in_flight=True)
    shown = await card(request, engine.blueprints[blueprint], in_flight)
    panel = await state_context(request, blueprint, state) if state else None
    context = BlueprintBreakpoints(shown, panel, message)
    if wants_json(request):
        return json_response(context.to_json())
    if htmx(request):
        return await render_fragment(request, "_blueprint_breakpoints.html", context)
    raise web.HTTPSeeOther(f"{request.app[prefix_key]}/blueprints/{blueprint}")


@routes.post("/blueprints/{name}/states/{state}/breakpoint", name="set_breakpoint")
async def set_blueprint_breakpoint(request: web.Request) -> web.StreamResponse:
    """POST: hold every new job of the blueprint before the state's handler runs (operators only)."""
    blueprint, state = state_named(request)
    session = user_of(request)
    if session.scope is not None:
        raise StudioError(403, "Forbidden", "A breakpoint on every job of a blueprint is for operators.")
    breakpoint = await request.app[engine_key].set_breakpoint(blueprint, state, actor=session.actor)
    logger.info("studio: %s set breakpoint %s on %s.%s", session.actor, breakpoint.id, blueprint, state)
    return await _answer(request, blueprint, state, f"Every new job of {blueprint} is held before {state}.")


@routes.post("/blueprints/{name}/breakpoints/{breakpoint_id}/remove", name="remove_breakpoint")
async def remove_blueprint_breakpoint(request: web.Request) -> web.StreamResponse:
    """POST: remove a breakpoint of the blueprint; the jobs it held are continued."""
    blueprint = blueprint_named(request).name
    breakpoint_id = request.match_info["breakpoint_id"]
    found = {bp.id: bp for bp in await visible_breakpoints(request, blueprint)}
    if breakpoint_id not in found:
        raise BreakpointNotFound(breakpoint_id)
    form = await request.post()
    continued = await request.app[engine_key].remove_breakpoint(breakpoint_id, actor=user_of(request).actor)
    state = str(form.get("panel_state") or "") or None
    removed = found[breakpoint_id]
    note = f"; {len(continued)} held job{'s' if len(continued) != 1 else ''} continued" if continued else ""
    return await _answer(request, blueprint, state, f"Removed the breakpoint on {removed.state}{note}.")
