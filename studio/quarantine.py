"""Quarantine triage: jobs waiting for a person, in a compact table grouped by error signature.

An operator selects a group, the rows a text filter leaves, or single jobs, and releases them (as they
are, or with one params edit for all), retries them from a state, or fails them with a reason: each a
bulk action (:mod:`avtomatika.studio.bulk`) at a capped rate. The page's live stream sends counts, never
rows: the table does not move under the operator; new arrivals are announced ("3 new — show").
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from avtomatika.events import Event, EventKind
from avtomatika.reads import Signed
from avtomatika.studio.app_keys import data_key, engine_key
from avtomatika.studio.bulk_form import DEFAULT_RATE_PER_S
from avtomatika.studio.contexts import QuarantineContext, QuarantineCounts, TriageGroup, TriageItem
from avtomatika.studio.live import Update, stream_feed
from avtomatika.studio.render import page_or_json, user_of
from avtomatika.studio.sse import SseEvent

logger = logging.getLogger(__name__)

#: Events by which a job leaves quarantine (or may have: a cancel or fail of another job is not shown).
LEAVING = frozenset({EventKind.JOB_RELEASED, EventKind.JOB_RETRIED, EventKind.JOB_FAILED, EventKind.JOB_CANCELLED})
#: Ids of the jobs that left quarantine sent at most (the newest; the page keeps the rows it dimmed).
MAX_LEFT = 2000
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

routes = web.RouteTableDef()


#: Rows the table shows at most (every group's count is of all its jobs; "select all N" takes them all).
SHOWN_ROWS = 500
#: A quarantine this large is recounted at most this often while it changes (a recount reads every job).
RECOUNT_S = 1.0


def triage_groups(index: list[Signed], arrived: str | None = None) -> list[TriageGroup]:
    """The jobs by signature: the largest group first, each oldest quarantined first (a stable order).
    Each group counts all its jobs; the first SHOWN_ROWS jobs (and the one ``arrived`` for) are rows."""
    groups: dict[str, TriageGroup] = {}
    for entry in sorted(index, key=lambda e: (e.job.updated_at, e.job.id)):
        group = groups.setdefault(entry.signature.key, TriageGroup(entry.signature, [], 0))
        group.total += 1
        group.jobs.append(entry.job)
    ordered = sorted(groups.values(), key=lambda g: (-g.total, g.signature.message, g.signature.key))
    room = SHOWN_ROWS
    for group in ordered:
        rows = [job for n, job in enumerate(group.jobs) if n < room or job.id == arrived]
        group.items = [TriageItem(job, None, group.signature) for job in rows]
        room = max(0, room - len(rows))
    return ordered


async def quarantine_context(request: web.Request) -> QuarantineContext:
    index = await request.app[data_key].quarantine_index(client=user_of(request).scope)
    arrived = request.query.get("job") or None
    groups = triage_groups(index, arrived)
    engine = request.app[engine_key]
    for item in (i for g in groups for i in g.items):  # the rows' held tasks (the arrived job's params)
        tasks = await engine.current_tasks(item.job, limit=1)
        item.task = tasks[0] if tasks else None
    found = next((i for g in groups for i in g.items if i.job.id == arrived), None)
    held = found.task.params if found is not None and found.task is not None else None
    blueprints = engine.blueprints
    names = {entry.job.blueprint for entry in index}
    states = sorted({s for name in names if name in blueprints for s in blueprints[name].states})
    total = len(index)
    return QuarantineContext(f"Quarantine ({total})", groups, total, arrived, states, held, DEFAULT_RATE_PER_S)


@routes.get("/quarantine", name="quarantine")
async def quarantine_page(request: web.Request) -> web.StreamResponse:
    context = await quarantine_context(request)
    live = f"quarantine?since={time.time()!r}"  # jobs quarantined after the page was drawn are announced
    return await page_or_json(request, "quarantine.html", context, section="quarantine", live=live)


class QuarantineFeed:
    """The counts of what is quarantined now (per signature and in all), the jobs quarantined since the
    page was drawn (``?since=``: announced, not inserted) and those that left since the stream began
    (their rows dimmed), after every change to the quarantine."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        try:
            self.since = float(request.query.get("since", ""))
        except ValueError:
            self.since = time.time()
        self.left: dict[str, None] = {}
        self.recounted = 0.0
        self.large = False

    async def snapshot(self) -> list[Update]:
        index = await self.request.app[data_key].quarantine_index(client=user_of(self.request).scope)
        self.recounted, self.large = time.monotonic(), len(index) > SHOWN_ROWS
        counts: dict[str, int] = {}
        for entry in index:
            counts[entry.signature.key] = counts.get(entry.signature.key, 0) + 1
        arrivals = sum(1 for entry in index if entry.job.updated_at > self.since)
        left = list(self.left)[-MAX_LEFT:]
        return [(SseEvent.QUARANTINE_COUNTS, QuarantineCounts(len(index), counts, arrivals, left))]

    async def changes(self, events: list[Event]) -> list[Update]:
        if not any(e.kind in CHANGING for e in events):
            return []
        for event in events:
            if event.kind in LEAVING and event.job_id is not None:
                self.left[event.job_id] = None
        if self.large:  # a recount reads every quarantined job: at most one a RECOUNT_S
            await asyncio.sleep(max(0.0, self.recounted + RECOUNT_S - time.monotonic()))
        return await self.snapshot()


@routes.get("/live/quarantine", name="live_quarantine")
async def quarantine_live(request: web.Request) -> web.StreamResponse:
    return await stream_feed(request, QuarantineFeed(request))
