"""Who is calling: the client behind ``X-Avtomatika-Token``, the worker behind ``X-Worker-Token``."""

from __future__ import annotations

from aiohttp import web

from ..clients import Client
from .errors import ApiError
from .keys import engine_key

CLIENT_HEADER = "X-Avtomatika-Token"
WORKER_HEADER = "X-Worker-Token"


def client_of(request: web.Request) -> Client:
    client = request.app[engine_key].access.client(request.headers.get(CLIENT_HEADER))
    if client is None:
        raise ApiError(401, f"missing or unknown {CLIENT_HEADER}")
    return client


def check_worker(request: web.Request, worker_id: str | None) -> str | None:
    """Accept the worker token; a per-worker token may only act as its own worker id.

    Returns the worker id the token belongs to (None for the global token or an open API).
    """
    accepted, owner = request.app[engine_key].access.worker(request.headers.get(WORKER_HEADER))
    if not accepted:
        raise ApiError(401, f"missing or unknown {WORKER_HEADER}")
    if owner is not None and worker_id is not None and worker_id != owner:
        raise ApiError(403, f"this token belongs to worker '{owner}', not '{worker_id}'")
    return owner
