"""Public routes (``/_public``): status, health, and the human-approval webhook (authenticated)."""

from __future__ import annotations

import logging

from aiohttp import web

from .auth import client_of, owner_of
from .errors import error_response
from .keys import engine_key
from .payloads import ApprovalRequest
from .requests import parse, read_json

logger = logging.getLogger(__name__)

PREFIX = "/_public"


async def status(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def health(request: web.Request) -> web.Response:
    engine = request.app[engine_key]
    try:
        await engine.storage.ping()
    except Exception as exc:
        logger.warning("health check: storage unreachable: %s", exc)
        return error_response(503, f"storage unreachable: {exc}", status="unhealthy")
    return web.json_response({"status": "healthy", "storage": type(engine.storage).__name__})


async def approval(request: web.Request) -> web.Response:
    """Answer a job waiting for human approval; needs the token of the client that owns the job."""
    client = client_of(request)
    engine = request.app[engine_key]
    job = await engine.require_job(request.match_info["job_id"], owner_of(request))
    body = parse(ApprovalRequest, await read_json(request, max_depth=engine.config.MAX_JSON_DEPTH))
    job = await engine.decide(job.id, body.decision, actor=f"client:{client.name}")
    return web.json_response({"status": "decision_accepted", "job_id": job.id, "current_state": job.state})


def setup_public_routes(app: web.Application) -> None:
    app.router.add_get(f"{PREFIX}/status", status)
    app.router.add_get(f"{PREFIX}/health", health)
    app.router.add_post(f"{PREFIX}/webhooks/approval/{{job_id}}", approval)
