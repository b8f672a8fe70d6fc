"""Every error becomes JSON ``{"error": ..., "field"?, "details"?}`` with a 4xx/5xx status."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from ..errors import (
    AvtomatikaError,
    BreakpointNotFound,
    BreakpointRefused,
    BulkNotFound,
    BulkRefused,
    InvalidOperation,
    JobNotFound,
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


def _status_of(exc: AvtomatikaError) -> int:
    if isinstance(exc, JobNotFound | UnknownBlueprint | WorkerNotFound | BreakpointNotFound | BulkNotFound):
        return 404
    if isinstance(exc, ResultRejected):
        return exc.status
    if isinstance(exc, InvalidOperation):
        return 409
    return 400


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.message, field=exc.field, details=exc.details, **exc.extra)
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    except ValidationError as exc:  # a blueprint's input model refused initial_data
        errors = exc.errors(include_url=False, include_input=False)
        field = ".".join(str(p) for p in errors[0]["loc"]) or None
        return error_response(
            400,
            f"{field}: {errors[0]['msg']}" if field else errors[0]["msg"],
            field=field,
            details=[{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in errors],
        )
    except (BreakpointRefused, BulkRefused) as exc:
        return error_response(400, str(exc), field=exc.field)
    except AvtomatikaError as exc:
        return error_response(_status_of(exc), str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
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
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error; see the engine's log")
