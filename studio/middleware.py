"""The studio's two middlewares: errors (rendered by ``Accept``) and access (session, CSRF, roles).

``error_middleware`` maps :class:`~avtomatika.errors.AvtomatikaError` subclasses and HTTP errors to a
status and renders ``error.html`` for a browser, ``_error.html`` (into ``#flash``) for htmx, or JSON.
Engine code never raises ``web.HTTPException``; the studio raises :class:`StudioError`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web
from pydantic import ValidationError

from avtomatika.api.errors import ApiError
from avtomatika.api.limits import take_rate
from avtomatika.errors import (
    AvtomatikaError,
    BreakpointNotFound,
    BulkNotFound,
    InvalidOperation,
    JobNotFound,
    UnknownBlueprint,
    WorkerNotFound,
)
from avtomatika.reads import InvalidCursor

from .access import csrf_ok, sent_csrf
from .htmx import htmx, retarget
from .keys import access_key, limiter_key, prefix_key, session_key
from .render import error_context, render_template, wants_json

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Paths (below the studio's prefix) served without a session: sign-in and static files.
PUBLIC_PREFIXES = ("/login", "/logout", "/static/")


class StudioError(AvtomatikaError):
    """An error of the studio itself, with the HTTP status it answers with."""

    def __init__(self, status: int, title: str, message: str) -> None:
        self.status = status
        self.title = title
        self.message = message
        super().__init__(f"{title}: {message}")


def status_of(exc: Exception) -> tuple[int, str]:
    """The HTTP status and short title of an error."""
    if isinstance(exc, StudioError):
        return exc.status, exc.title
    if isinstance(exc, JobNotFound | UnknownBlueprint | WorkerNotFound | BreakpointNotFound | BulkNotFound):
        return 404, "Not found"
    if isinstance(exc, InvalidOperation):
        return 409, "Not possible now"
    if isinstance(exc, InvalidCursor | AvtomatikaError):
        return 400, "Bad request"
    if isinstance(exc, ValidationError):
        return 422, "Invalid input"
    return 500, "Internal error"


async def render_error(request: web.Request, status: int, title: str, message: str) -> web.Response:
    """An error as JSON, as an htmx fragment for ``#flash``, or as a page."""
    if wants_json(request):
        return web.json_response({"error": message, "title": title}, status=status)
    if htmx(request):
        response = await render_template(request, "_error.html", error_context(status, title, message), status)
        retarget(response, "#flash", "innerHTML")
        return response
    return await render_template(request, "error.html", error_context(status, title, message), status, page=True)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return await render_error(request, exc.status, exc.reason, message or exc.reason)
    except ApiError as exc:  # a limit of the API (size, quota, rate), which the studio's actions share
        response = await render_error(request, exc.status, HTTPStatus(exc.status).phrase, exc.message)
        response.headers.update(exc.headers or {})
        return response
    except (AvtomatikaError, ValidationError) as exc:
        status, title = status_of(exc)
        message = exc.message if isinstance(exc, StudioError) else str(exc)
        return await render_error(request, status, title, message)
    except Exception:
        logger.exception("studio: unhandled error on %s %s", request.method, request.path)
        return await render_error(request, 500, "Internal error", "Something went wrong; see the engine's log.")


def _public(request: web.Request) -> bool:
    return request.path.removeprefix(request.app[prefix_key]).startswith(PUBLIC_PREFIXES)


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Loopback check, sign-in, CSRF on every POST, read-only viewers, and the rate of actions."""
    access = request.app[access_key]
    if not access.allowed_remote(request):
        raise StudioError(403, "Forbidden", "The studio is open on loopback only; set STUDIO_TOKEN to serve it.")
    session, new = access.read(request)
    request[session_key] = session
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        if not csrf_ok(session, await sent_csrf(request)):
            raise StudioError(403, "Forbidden", "Missing or wrong CSRF token; reload the page and try again.")
        if not _public(request):
            if not session.can_act:
                raise StudioError(403, "Forbidden", "This session is read-only.")
            # The client's own bucket (shared with its API calls), or the operator's at this address.
            who = f"client:{session.client}" if session.scope else f"{session.actor}@{request.remote}"
            take_rate(request.app[limiter_key], "client_write", who)
    elif session.role is None and not _public(request):
        return await _sign_in_first(request)
    response = await handler(request)
    if new and not response.prepared:
        access.write(response, request, session)
    return response


async def _sign_in_first(request: web.Request) -> web.StreamResponse:
    if wants_json(request) or request.path.removeprefix(request.app[prefix_key]).startswith("/live/"):
        raise StudioError(401, "Sign-in required", "Sign in on the studio's login page first.")
    login = request.app.router["login"].url_for().with_query(next=request.path_qs)
    if htmx(request):
        response = web.Response(status=204)
        response.headers["HX-Redirect"] = str(login)
        return response
    raise web.HTTPSeeOther(login)
