"""Public routes (``/_public``): status, health, metrics, and the human-approval webhook (authenticated)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .app_keys import engine_key
from .auth import client_of, owner_of
from .errors import error_response
from .payloads import ApprovalRequest, DecisionAccepted, ErrorBody, Health, StatusOk, Unhealthy
from .render import json_response
from .requests import required_body
from .routes import Operation, Routes

logger = logging.getLogger(__name__)

PREFIX = "/_public"
#: Longest a health check waits for one backend: a hung connection must not hang the probe.
HEALTH_TIMEOUT_S = 5.0
routes = Routes("public")


@routes.get(f"{PREFIX}/status", Operation("Liveness: the engine answers", {200: StatusOk}))
async def status(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get(f"{PREFIX}/health", Operation("Readiness: storage (and history) reachable", {200: Health, 503: Unhealthy}))
async def health(request: web.Request) -> web.Response:
    """200 when storage (and history, when the engine keeps one) answer; 503 naming what does not."""
    backends = request.app[engine_key].reads.backends()
    checks = {name: backend.ping for name, backend in backends.items()}
    problems = [p for p in await asyncio.gather(*(_reach(name, ping) for name, ping in checks.items())) if p]
    if problems:
        return error_response(503, "; ".join(problems), status="unhealthy")
    body = {"status": "healthy", **{name: backend.name for name, backend in backends.items()}}
    return json_response(body)


async def _reach(name: str, ping: Callable[[], Awaitable[None]]) -> str | None:
    """None when ``ping`` answers in time, else why not."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            await ping()
    except TimeoutError:
        problem = f"{name} unreachable: no answer within {HEALTH_TIMEOUT_S:g} s"
    except Exception as exc:
        problem = f"{name} unreachable: {exc}"
    else:
        return None
    logger.warning("health check: %s", problem)
    return problem


@routes.get(
    f"{PREFIX}/metrics",
    Operation(
        "Prometheus metrics",
        {
            200: {
                "text/plain": "Prometheus text exposition",
                "application/openmetrics-text": "OpenMetrics exposition (when asked for in Accept)",
            },
            503: ErrorBody,
        },
    ),
)
async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the engine's metrics (text, or OpenMetrics when the scraper asks for it)."""
    collector = getattr(request.app[engine_key], "metrics", None)
    if collector is None:
        return error_response(503, "metrics are not enabled on this engine")
    body, content_type = await collector.render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


@routes.post(
    f"{PREFIX}/webhooks/approval/{{job_id}}",
    Operation(
        "Answer a job waiting for human approval (the job owner's client token)",
        security="client",
        body=ApprovalRequest,
        responses={200: DecisionAccepted},
        errors={404: "Unknown job, or one of another client", 409: "The job does not wait for this decision"},
    ),
)
async def approval(request: web.Request) -> web.Response:
    """Answer a job waiting for human approval; needs the token of the client that owns the job."""
    client = client_of(request)
    engine = request.app[engine_key]
    job = await engine.require_job(request.match_info["job_id"], owner_of(request))
    body = await required_body(request, ApprovalRequest)
    job = await engine.decide(job.id, body.decision, actor=f"client:{client.name}")
    return json_response({"status": "decision_accepted", "job_id": job.id, "current_state": job.state})
