"""The studio's routes: one module per page family (blueprints, jobs, operations, quarantine, workers, sign-in...)."""

from __future__ import annotations

from aiohttp import web

from avtomatika.studio.blueprints import setup_blueprint_routes
from avtomatika.studio.breakpoints import setup_breakpoint_routes
from avtomatika.studio.bulk import setup_bulk_routes
from avtomatika.studio.hold import setup_hold_routes
from avtomatika.studio.job import setup_job_routes
from avtomatika.studio.jobs import setup_jobs_routes
from avtomatika.studio.operations import setup_operation_routes
from avtomatika.studio.patterns import setup_pattern_routes
from avtomatika.studio.quarantine import setup_quarantine_routes
from avtomatika.studio.render import STATIC_DIR
from avtomatika.studio.rerun import setup_rerun_routes
from avtomatika.studio.signin import setup_sign_in_routes
from avtomatika.studio.workers import setup_worker_routes


async def index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.app.router["blueprints"].url_for())


def setup_routes(app: web.Application) -> None:
    """Every studio route, relative to where the studio is mounted."""
    router = app.router
    router.add_get("/", index, name="index")
    setup_blueprint_routes(router)
    setup_jobs_routes(router)
    setup_job_routes(router)
    setup_rerun_routes(router)
    setup_breakpoint_routes(router)
    setup_hold_routes(router)  # before the operations' /jobs/{job_id}/{operation}
    setup_operation_routes(router)
    setup_quarantine_routes(router)
    setup_bulk_routes(router)
    setup_worker_routes(router)
    setup_sign_in_routes(router)
    setup_pattern_routes(router)
    router.add_static("/static/", STATIC_DIR, name="static", append_version=False)
