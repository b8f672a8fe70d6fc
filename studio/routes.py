"""The studio's routes: one module per page family (blueprints, jobs, operations, quarantine, workers, sign-in...),
each declaring its own with a ``routes`` table."""

from __future__ import annotations

from aiohttp import web

from avtomatika.studio import (
    blueprints,
    breakpoints,
    bulk,
    hold,
    job,
    jobs,
    operations,
    patterns,
    quarantine,
    rerun,
    signin,
    workers,
)
from avtomatika.studio.render import STATIC_DIR

#: In this order: a job's rerun page and hold routes come before the operations'
#: ``/jobs/{job_id}/{operation}``, which would otherwise answer their paths.
PAGE_FAMILIES = (
    blueprints,
    jobs,
    job,
    rerun,
    breakpoints,
    hold,
    operations,
    quarantine,
    bulk,
    workers,
    signin,
    patterns,
)


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.app.router["blueprints"].url_for())


def setup_routes(app: web.Application) -> None:
    """Every studio route, relative to where the studio is mounted."""
    router = app.router
    router.add_get("/", index, name="index")
    for family in PAGE_FAMILIES:
        router.add_routes(family.routes)
    router.add_static("/static/", STATIC_DIR, name="static", append_version=False)
