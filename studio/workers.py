"""Workers: registered workers, alive or expired, their task types, load and current tasks."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from avtomatika.events import Event, EventKind
from avtomatika.studio.app_keys import data_key
from avtomatika.studio.contexts import WorkersContext
from avtomatika.studio.live import Update, stream_feed
from avtomatika.studio.render import json_response, render_page, user_of, wants_json
from avtomatika.studio.sse import SseEvent

logger = logging.getLogger(__name__)

_WORKER_KINDS = frozenset(
    {
        EventKind.WORKER_REGISTERED,
        EventKind.WORKER_EXPIRED,
        EventKind.TASK_TAKEN,
        EventKind.TASK_RESULT,
        EventKind.TASK_DISPATCHED,
        EventKind.JOB_CANCELLED,
    }
)

routes = web.RouteTableDef()


async def workers_context(request: web.Request) -> WorkersContext:
    scope = user_of(request).scope
    reads = request.app[data_key]
    workers = await reads.workers(scope)
    alive = sum(1 for w in workers if w.alive)
    queues = await reads.queues(workers) if scope is None else []  # every client's tasks: an operator's view
    return WorkersContext(
        title=f"Workers ({alive} alive)", workers=workers, at=time.time(), queues=queues, details=scope is None
    )


@routes.get("/workers", name="workers")
async def workers_page(request: web.Request) -> web.StreamResponse:
    context = await workers_context(request)
    if wants_json(request):
        return json_response(context.to_json())
    return await render_page(request, "workers.html", context, section="workers", live="workers")


class WorkersFeed:
    """The workers table, again after anything that changes a worker or its load."""

    def __init__(self, request: web.Request) -> None:
        self.request = request

    async def snapshot(self) -> list[Update]:
        return [(SseEvent.WORKER_TABLE, await workers_context(self.request))]

    async def changes(self, events: list[Event]) -> list[Update]:
        return await self.snapshot() if any(e.kind in _WORKER_KINDS for e in events) else []


@routes.get("/live/workers", name="live_workers")
async def workers_live(request: web.Request) -> web.StreamResponse:
    return await stream_feed(request, WorkersFeed(request))
