"""The studio's factory: a sub-application mounted on the engine's aiohttp app at ``/studio``."""

from __future__ import annotations

import logging
import weakref
from pathlib import Path

from aiohttp import web

from avtomatika.api.limits import Limiter, Limits, limits_key
from avtomatika.engine import OrchestratorEngine
from avtomatika.studio.access import Access
from avtomatika.studio.app_keys import (
    access_key,
    data_key,
    engine_key,
    limiter_key,
    prefix_key,
    sign_in_key,
    sse_streams_key,
)
from avtomatika.studio.live import broadcaster_ctx, close_streams
from avtomatika.studio.middleware import access_middleware, error_middleware
from avtomatika.studio.render import setup_templates
from avtomatika.studio.routes import setup_routes
from avtomatika.studio.signin import SignInGuard

logger = logging.getLogger(__name__)

STUDIO_PREFIX = "/studio"


def setup_middlewares(app: web.Application) -> None:
    # Errors outermost, so a refusal by the access middleware renders as a page, a fragment or JSON.
    app.middlewares.extend([error_middleware, access_middleware])


def setup_lifecycle(app: web.Application) -> None:
    app.cleanup_ctx.append(broadcaster_ctx)
    app.on_shutdown.append(close_streams)


def create_studio(
    engine: OrchestratorEngine,
    prefix: str = STUDIO_PREFIX,
    templates: Path | None = None,
    limiter: Limiter | None = None,
) -> web.Application:
    """The studio as an application of its own, to be mounted at ``prefix``.

    Args:
        engine: The engine to show and operate, called in-process.
        prefix: Where it will be mounted.
        templates: A folder of templates overriding the studio's (they may extend ``default:<name>``).
        limiter: The rate buckets its actions and sign-ins take from (the API's, to share them).
    """
    app = web.Application(client_max_size=engine.config.MAX_REQUEST_BODY_BYTES)
    app[engine_key] = engine
    app[limiter_key] = limiter or Limiter(Limits.from_config(engine.config))
    app[sign_in_key] = SignInGuard(app[limiter_key])
    app[prefix_key] = prefix
    app[access_key] = Access(engine.config, engine.access)
    app[data_key] = engine.reads
    app[sse_streams_key] = weakref.WeakSet()
    setup_templates(app, prefix, templates)
    setup_middlewares(app)
    setup_lifecycle(app)
    setup_routes(app)
    return app


def setup_studio(
    app: web.Application, engine: OrchestratorEngine, prefix: str = STUDIO_PREFIX, templates: Path | None = None
) -> web.Application:
    """Mount the studio on ``app`` (the engine's HTTP application) at ``prefix``; returns the studio app.

    On the engine's API application, the studio's actions share the API's rate buckets.
    """
    studio = create_studio(engine, prefix, templates, app.get(limits_key))

    async def to_studio(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{prefix}/")

    # Before the sub-application, which would otherwise answer "/studio" (no slash) with a 404.
    app.router.add_get(prefix, to_studio)
    app.router.add_get("/", to_studio)
    app.add_subapp(prefix, studio)
    access = studio[access_key]
    if access.mode == "loopback":
        logger.warning(
            "studio at %s: no STUDIO_TOKEN nor client token set: it answers loopback (and TRUSTED_NETWORKS) peers only",
            prefix,
        )
    return studio
