"""Every error becomes JSON ``{"error": ..., "field"?, "details"?}`` with a 4xx/5xx status."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from ..errors import (
    AvtomatikaError,
    BreakpointNotFound,
    BulkNotFound,
    InvalidOperation,
    JobNotFound,
    Refused,
    ResultRejected,
    UnknownBlueprint,
    WorkerNotFound,
)
from .render import json_response

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: ``/api[/version]/jobs/<name>``: where a blueprint's endpoint would be; a POST there that the router
#: answers 405 (the GET of a job matched) asked for a blueprint that is not served.
_BLUEPRINT_ENDPOINT = re.compile(r"/api/(?:[^/]+/)?jobs/[^/]+")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.details = status, message, field, details
        self.headers = headers
        #: More keys of the JSON body (``{"settings": [...]}``).
        self.extra = extra or {}


def error_response(status: int, message: str, /, **extra: Any) -> web.Response:
    """JSON ``{"error": message, **extra}`` (extra keys set to None are left out); ``extra`` may hold
    a ``status`` key of its own, as the health check's ``"unhealthy"``."""
    body = {"error": message, **{k: v for k, v in extra.items() if v is not None}}
    return json_response(body, status)


#: The HTTP status of each kind of engine error, and the title the studio heads it with: the API and the
#: studio both answer with these. The first kind an error is an instance of wins; any other is a 400.
ERROR_STATUSES: tuple[tuple[tuple[type[AvtomatikaError], ...], int, str], ...] = (
    ((JobNotFound, UnknownBlueprint, WorkerNotFound, BreakpointNotFound, BulkNotFound), 404, "Not found"),
    ((InvalidOperation,), 409, "Not possible now"),
)


def error_status(exc: AvtomatikaError) -> tuple[int, str]:
    """The HTTP status of an engine error (from :data:`ERROR_STATUSES`) and its title."""
    if isinstance(exc, ResultRejected):  # stale (409) or foreign (403): the result says which
        return exc.status, HTTPStatus(exc.status).phrase
    for kinds, status, title in ERROR_STATUSES:
        if isinstance(exc, kinds):
            return status, title
    return 400, "Bad request"


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer to ``exc``, raised while serving ``request``; a redirect (an HTTPException
    below 400) is raised again, for aiohttp to send."""
    if isinstance(exc, ApiError):
        response = error_response(exc.status, exc.message, field=exc.field, details=exc.details, **exc.extra)
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    if isinstance(exc, ValidationError):  # a blueprint's input model refused initial_data
        errors = exc.errors(include_url=False, include_input=False)
        field = ".".join(str(p) for p in errors[0]["loc"]) or None
        return error_response(
            400,
            f"{field}: {errors[0]['msg']}" if field else errors[0]["msg"],
            field=field,
            details=[{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in errors],
        )
    if isinstance(exc, Refused):
        return error_response(400, str(exc), field=exc.field)
    if isinstance(exc, AvtomatikaError):
        return error_response(error_status(exc)[0], str(exc))
    if isinstance(exc, web.HTTPException):
        return _http_error(request, exc)
    logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal error; see the engine's log")


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status < 400:
        raise exc
    if exc.status == 405 and request.method == "POST" and _BLUEPRINT_ENDPOINT.fullmatch(request.path):
        return error_response(
            404,
            f"no blueprint serves POST {request.path}; GET /api/blueprints lists blueprints and their endpoints",
            field="blueprint",
        )
    message = f"{exc.reason}: {request.method} {request.path}" if exc.status in (404, 405) else exc.reason
    response = error_response(exc.status, message)
    if "Allow" in exc.headers:  # a 405 says which methods the route takes
        response.headers["Allow"] = exc.headers["Allow"]
    return response
