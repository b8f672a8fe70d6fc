"""Workers: registered workers, alive or expired, their task types, load and current tasks; sign-in."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlparse

from aiohttp import web

from avtomatika.events import Event, EventKind
from avtomatika.studio.access import OPERATOR
from avtomatika.studio.contexts import WorkersContext
from avtomatika.studio.keys import access_key, data_key, prefix_key, sign_in_key
from avtomatika.studio.live import Update, stream_feed
from avtomatika.studio.render import json_response, render_page, render_template, user_of, wants_json
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


async def workers_context(request: web.Request) -> WorkersContext:
    scope = user_of(request).scope
    reads = request.app[data_key]
    workers = await reads.workers(scope)
    alive = sum(1 for w in workers if w.alive)
    queues = await reads.queues(workers) if scope is None else []  # every client's tasks: an operator's view
    return WorkersContext(
        title=f"Workers ({alive} alive)", workers=workers, at=time.time(), queues=queues, details=scope is None
    )


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


async def workers_live(request: web.Request) -> web.StreamResponse:
    return await stream_feed(request, WorkersFeed(request))


def _safe_next(request: web.Request, target: str | None) -> str:
    """Where to go after sign-in: a path inside the studio, never another site."""
    prefix = request.app[prefix_key]
    parsed = urlparse(target or "")
    if parsed.scheme or parsed.netloc or not (target or "").startswith(prefix):
        return f"{prefix}/blueprints"
    return str(target)


async def login_page(request: web.Request) -> web.StreamResponse:
    context = {"title": "Sign in", "error": None, "next": _safe_next(request, request.query.get("next")), "name": ""}
    return await render_template(request, "login.html", context, page=True, section="login")


async def login(request: web.Request) -> web.StreamResponse:
    """POST: check the token; a signed session cookie on success (CSRF was checked by the middleware)."""
    access = request.app[access_key]
    guard = request.app[sign_in_key]
    guard.admit(request)
    form = await request.post()
    name = str(form.get("name") or "").strip()[:60] or "operator"
    target = _safe_next(request, str(form.get("next") or ""))
    found = access.role_for(str(form.get("token") or "")) if access.mode == "token" else (OPERATOR, None)
    if found is None:
        guard.failed(request.remote or "unknown")
        context = {"title": "Sign in", "error": "Wrong token.", "next": target, "name": name}
        return await render_template(request, "login.html", context, 401, page=True, section="login")
    role, client = found
    response = web.HTTPSeeOther(target)
    access.write(response, request, access.sign_in(role, name, client))
    logger.info("studio: %s signed in as %s%s", name, role, f" of {client}" if client else "")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    access = request.app[access_key]
    response = web.HTTPSeeOther(f"{request.app[prefix_key]}/login")
    access.write(response, request, access.fresh())
    logger.info("studio: %s signed out", user_of(request).name)
    raise response


def setup_worker_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/workers", workers_page, name="workers")
    router.add_get("/live/workers", workers_live, name="live_workers")
    router.add_get("/login", login_page, name="login")
    router.add_post("/login", login, name="login_post")
    router.add_post("/logout", logout, name="logout")
