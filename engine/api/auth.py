"""Who is calling: the client behind ``X-Avtomatika-Token``, the worker behind ``X-Worker-Token``."""

from __future__ import annotations

from aiohttp import web

from ..access import Client
from .app_keys import engine_key
from .errors import ApiError

CLIENT_HEADER = "X-Avtomatika-Token"
WORKER_HEADER = "X-Worker-Token"


def client_of(request: web.Request) -> Client:
    """The calling client; 401 without a known client token (anyone, when no token is configured)."""
    client = request.app[engine_key].access.client(request.headers.get(CLIENT_HEADER))
    if client is None:
        raise ApiError(401, f"missing or unknown {CLIENT_HEADER}")
    return client


def client_actor(request: web.Request) -> str:
    """Who an operation is recorded as done by: ``client:<name>``."""
    return f"client:{client_of(request).name}"


def owner_of(request: web.Request) -> str | None:
    """The client whose jobs this request may see and change; None (every job) only on an open API.

    Decided by whether tokens are configured, never by the client's name, so a client named like
    the open API's placeholder cannot see everyone's jobs.
    """
    return client_and_owner(request)[1]


def client_and_owner(request: web.Request) -> tuple[Client, str | None]:
    """:func:`client_of` and :func:`owner_of` of ``request``, its token looked up once."""
    access = request.app[engine_key].access
    client = access.client(request.headers.get(CLIENT_HEADER))
    if client is None:
        raise ApiError(401, f"missing or unknown {CLIENT_HEADER}")
    return client, None if access.clients_open else client.name


def worker_token(request: web.Request) -> str | None:
    """Check ``X-Worker-Token`` (401 if refused) before anything else is read from the request.

    Returns the worker id the token belongs to: None for the global token or an open worker API.
    """
    accepted, owner = request.app[engine_key].access.worker(request.headers.get(WORKER_HEADER))
    if not accepted:
        raise ApiError(401, f"missing or unknown {WORKER_HEADER}")
    return owner


def check_owner(owner: str | None, worker_id: str | None) -> None:
    """A per-worker token may only act as its own worker id (403 otherwise)."""
    if owner is not None and worker_id is not None and worker_id != owner:
        raise ApiError(403, f"this token belongs to worker '{owner}', not '{worker_id}'")


def check_worker(request: web.Request, worker_id: str | None) -> str | None:
    """:func:`worker_token` then :func:`check_owner` for ``worker_id``; returns the token's worker id."""
    owner = worker_token(request)
    check_owner(owner, worker_id)
    return owner
