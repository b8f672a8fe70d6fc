"""Quarantine triage: jobs waiting for a person, in a compact table grouped by error signature.

An operator selects a group, the rows a text filter leaves, or single jobs, and releases them (as they
are, or with one params edit for all), retries them from a state, or fails them with a reason: each a
bulk action (:mod:`avtomatika.studio.bulk`) at a capped rate. The page's live stream sends counts, never
rows: the table does not move under the operator; new arrivals are announced ("3 new — show").
"""

from __future__ import annotations

import logging

from aiohttp import web

from ..events import Event, EventKind
from ..reads import JobDetail, error_signature
from .bulk_form import DEFAULT_RATE_PER_S
from .contexts import QuarantineContext, QuarantineCounts, TriageGroup, TriageItem
from .keys import data_key, engine_key
from .live import Update, stream_feed
from .render import json_response, render_page, user_of, wants_json
from .sse import SseEvent

logger = logging.getLogger(__name__)

#: Events that change what is quarantined.
CHANGING = frozenset(
    {
        EventKind.JOB_QUARANTINED,
        EventKind.JOB_RELEASED,
        EventKind.JOB_RETRIED,
        EventKind.JOB_FAILED,
        EventKind.JOB_CANCELLED,
    }
)


def triage_items(details: list[JobDetail]) -> list[TriageItem]:
    items = []
    for detail in details:
        task = detail.tasks[0] if detail.tasks else None
        items.append(TriageItem(detail.job, task, error_signature(detail.job.error, task.type if task else None)))
    return items


def triage_groups(items: list[TriageItem]) -> list[TriageGroup]:
    """Items by signature: the largest group first, each oldest quarantined first (a stable order)."""
    groups: dict[str, TriageGroup] = {}
    for item in sorted(items, key=lambda i: (i.job.updated_at, i.job.id)):
        groups.setdefault(item.signature.key, TriageGroup(item.signature, [])).items.append(item)
    return sorted(groups.values(), key=lambda g: (-len(g.items), g.signature.message, g.signature.key))


def counts_of(items: list[TriageItem]) -> QuarantineCounts:
    counts: dict[str, int] = {}
    for item in items:
        counts[item.signature.key] = counts.get(item.signature.key, 0) + 1
    return QuarantineCounts(len(items), counts, [item.job.id for item in items])


async def quarantine_context(request: web.Request) -> QuarantineContext:
    details = await request.app[data_key].quarantined(client=user_of(request).scope)
    groups = triage_groups(triage_items(details))
    arrived = request.query.get("job") or None
    found = next((i for g in groups for i in g.items if i.job.id == arrived), None)
    held = found.task.params if found is not None and found.task is not None else None
    blueprints = request.app[engine_key].blueprints
    names = {d.job.blueprint for d in details}
    states = sorted({s for name in names if name in blueprints for s in blueprints[name].states})
    total = len(details)
    return QuarantineContext(f"Quarantine ({total})", groups, total, arrived, states, held, DEFAULT_RATE_PER_S)


async def quarantine_page(request: web.Request) -> web.StreamResponse:
    context = await quarantine_context(request)
    if wants_json(request):
        return json_response(context.to_json())
    return await render_page(request, "quarantine.html", context, section="quarantine", live="quarantine")


class QuarantineFeed:
    """The counts of what is quarantined now (per signature, and the ids), after every change to it."""

    def __init__(self, request: web.Request) -> None:
        self.request = request

    async def snapshot(self) -> list[Update]:
        details = await self.request.app[data_key].quarantined(client=user_of(self.request).scope)
        return [(SseEvent.QUARANTINE_COUNTS, counts_of(triage_items(details)))]

    async def changes(self, events: list[Event]) -> list[Update]:
        return await self.snapshot() if any(e.kind in CHANGING for e in events) else []


async def quarantine_live(request: web.Request) -> web.StreamResponse:
    return await stream_feed(request, QuarantineFeed(request))


def setup_quarantine_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/quarantine", quarantine_page, name="quarantine")
    router.add_get("/live/quarantine", quarantine_live, name="live_quarantine")
