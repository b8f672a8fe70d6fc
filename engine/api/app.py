"""The aiohttp application of the engine's HTTP API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from . import breakpoints, bulk, public, rerun, worker
from .app_keys import engine_key
from .client import setup_client_routes
from .errors import Handler, error_answer
from .exposure import Exposure, add_cors_headers, exposure_key, screen
from .limits import Limiter, Limits, limited, limits_key
from .openapi import setup_openapi_routes

if TYPE_CHECKING:
    from ..engine import OrchestratorEngine


def create_app(engine: OrchestratorEngine, *, limits: Limits | None = None) -> web.Application:
    """The API application serving ``engine``'s registered blueprints, within ``limits`` (the defaults)."""
    app = web.Application(
        middlewares=[api_middleware],
        client_max_size=engine.config.MAX_REQUEST_BODY_BYTES,
    )
    app[engine_key] = engine
    app[exposure_key] = exposure = Exposure.of(engine.config, engine.access)
    if exposure.cors_origins:  # else no foreign origin is ever allowed: no answer has CORS headers to get
        app.on_response_prepare.append(add_cors_headers)
    app[limits_key] = Limiter(limits or Limits.from_config(engine.config))
    public.routes.add_to(app)
    setup_openapi_routes(app)
    worker.routes.add_to(app)
    setup_client_routes(app, list(engine.blueprints.values()))
    for module in (breakpoints, bulk, rerun):
        module.routes.add_to_client_api(app)
    app.on_shutdown.append(_end_waiting_requests)
    return app


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request's checks, in order: who may call from where (engine/api/exposure.py), then the
    limits (engine/api/limits.py); any error, theirs or the handler's, answered as JSON
    (engine/api/errors.py). One middleware rather than three: aiohttp runs a coroutine per
    middleware and request."""
    try:
        preflight = screen(request)
        if preflight is not None:
            return preflight
        return await limited(request, handler)
    except Exception as exc:
        return error_answer(request, exc)


async def _end_waiting_requests(app: web.Application) -> None:
    """Open worker long polls answer 204 at once, clients waiting for a job answer with it as it is,
    and worker WebSockets are closed, instead of holding the shutdown up to their timeout (aiohttp
    waits a minute for open handlers)."""
    await app[engine_key].lifecycle.end_waiting_requests()
