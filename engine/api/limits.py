"""Limits of the HTTP API: sizes of params and data, open long polls and streams, request rates.

Request bodies are bounded by ``MAX_REQUEST_BODY_BYTES`` (aiohttp's ``client_max_size``) and their
nesting by ``MAX_JSON_DEPTH`` (engine/api/requests.py). This module adds:

- :func:`check_size`: a job's ``initial_data``, a release's ``params`` and a result's ``data`` over
  their byte limits are refused with 413 naming the field;
- :func:`job_attempt`: a client's monthly attempts (429 once spent);
- :func:`limited`: token buckets per endpoint class and caller (the client behind a
  valid token, the worker id, or the remote address for unauthenticated calls), answering 429 with
  ``Retry-After``; open long polls per worker and open SSE streams per caller, bounded (429 beyond).

Long polls are never rate limited, only counted while open, and a poll whose connection is gone no
longer counts: a worker polling back to back is never locked out (the original's bug).

The studio's actions go through the same checks (and the same buckets, ``client_write``), and its
sign-in through the ``sign_in`` bucket of the remote address.

Every limit is a setting (``MAX_PARAMS_BYTES``, ``RATE_LIMIT_*``...; see README's Configuration).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
from aiohttp import web

from ..access import AccessRegistry, Client
from ..config import Config
from .app_keys import engine_key
from .auth import CLIENT_HEADER, WORKER_HEADER
from .errors import ApiError, Handler

#: Token buckets kept at most; beyond it, full (idle) ones are forgotten.
MAX_BUCKETS = 10_000

Rate = tuple[float, int]
#: Classes of endpoints, each with its own rate (``RATE_LIMIT_<CLASS>_PER_SECOND`` and ``_BURST``).
RATE_CLASSES = ("client_read", "client_write", "worker", "public", "unauthenticated", "sign_in")


@dataclass(frozen=True)
class Limits:
    """The limits one application enforces; :meth:`from_config` reads them from the settings."""

    max_params_bytes: int
    max_result_data_bytes: int
    max_open_polls_per_worker: int
    max_streams_per_client: int
    rates: dict[str, Rate] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        rates = {
            name: (
                getattr(config, f"RATE_LIMIT_{name.upper()}_PER_SECOND"),
                getattr(config, f"RATE_LIMIT_{name.upper()}_BURST"),
            )
            for name in RATE_CLASSES
        }
        sizes = {f.name: getattr(config, f.name.upper()) for f in fields(cls) if f.name != "rates"}  # MAX_* settings
        return cls(**sizes, rates=rates)

    def with_rates(self, **rates: Rate) -> Limits:
        return Limits(
            self.max_params_bytes,
            self.max_result_data_bytes,
            self.max_open_polls_per_worker,
            self.max_streams_per_client,
            {**self.rates, **rates},
        )


UNLIMITED_RATES: dict[str, Rate] = {name: (0.0, 0) for name in RATE_CLASSES}


# -- sizes -----------------------------------------------------------------------------------------
def json_size(value: Any) -> int:
    return len(orjson.dumps(value))


def check_size(limits: Limits, name: str, value: Any, limit: int | None = None) -> None:
    """413 naming ``name`` when ``value`` as JSON is larger than ``limit`` (default: the params limit)."""
    if limit is None:
        limit = limits.max_params_bytes
    size = json_size(value)
    if size > limit:
        raise ApiError(413, f"{name} is {size} bytes of JSON; at most {limit} are accepted", field=name)


@contextmanager
def job_attempt(access: AccessRegistry, client: Client | None) -> Iterator[None]:
    """Count one job creation against ``client``'s monthly attempts for the block (429 once they are
    spent); given back when the block raises (the job was not created). ``None``: no client, no quota."""
    if client is None:
        yield
        return
    if not access.take_attempt(client):
        raise ApiError(429, f"client '{client.name}' has used its {client.monthly_attempts} monthly attempts")
    try:
        yield
    except BaseException:
        access.refund_attempt(client)
        raise


# -- rates -----------------------------------------------------------------------------------------
class TokenBuckets:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst``."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._clock = clock

    def take(self, key: str, rate: Rate) -> float:
        """0 if a token was taken, else the seconds until one will be there."""
        per_second, burst = rate
        if per_second <= 0:
            return 0.0
        at = self._clock()
        tokens, last = self._buckets.get(key, (float(burst), at))
        tokens = min(float(burst), tokens + (at - last) * per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, at)
            if len(self._buckets) > MAX_BUCKETS:
                self._forget_idle(at, per_second)
            return 0.0
        self._buckets[key] = (tokens, at)
        return (1.0 - tokens) / per_second

    def _forget_idle(self, at: float, per_second: float) -> None:
        for key, (tokens, last) in list(self._buckets.items()):
            if at - last > 60 or tokens + (at - last) * per_second >= 1.0:
                del self._buckets[key]


class OpenSlots:
    """Requests open at once per key (long polls, streams); a request whose connection is gone is not counted."""

    def __init__(self) -> None:
        self._open: dict[str, dict[int, web.Request]] = {}

    def take(self, key: str, request: web.Request, limit: int, what: str) -> None:
        """Count ``request`` open under ``key``; 429 when ``limit`` ``what`` (long polls...) are open already.

        Requests whose connection is gone are looked for only then, not on every poll (an SDK worker
        keeps 16 or more open).
        """
        open_ = self._open.setdefault(key, {})
        if len(open_) >= limit:
            for ident, other in list(open_.items()):
                if other.transport is None or other.transport.is_closing():
                    del open_[ident]
            if len(open_) >= limit:
                raise ApiError(429, f"{what} of {key}: at most {limit} open at once", headers={"Retry-After": "1"})
        open_[id(request)] = request

    def release(self, key: str, request: web.Request) -> None:
        """``request`` (counted by :meth:`take`) has ended."""
        open_ = self._open.get(key)
        if open_ is not None:
            open_.pop(id(request), None)
            if not open_:
                del self._open[key]


class Limiter:
    """What :func:`limited` keeps for one application."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.buckets = TokenBuckets()
        self.polls = OpenSlots()
        self.streams = OpenSlots()


limits_key = web.AppKey("limits", Limiter)

STUDIO_PREFIX = "/studio"
SESSION_COOKIE = "avtomatika_studio"


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


def classify(request: web.Request) -> tuple[str, str]:
    """(endpoint class, caller key) of a request. Classes: client_read, client_write, worker, worker_poll,
    public, unauthenticated, studio."""
    path = request.path
    access = request.app[engine_key].access
    if path.startswith("/_worker/"):
        accepted, owner = access.worker(request.headers.get(WORKER_HEADER))
        if not accepted:
            return "unauthenticated", f"address:{_address(request)}"
        worker_id = request.match_info.get("worker_id") or owner
        who = f"worker:{worker_id}" if worker_id else f"worker:global@{_address(request)}"
        if request.method == "GET" and path.endswith("/tasks/next"):
            return "worker_poll", who
        return "worker", who
    if path.startswith("/api/") or path.startswith("/_public/webhooks/"):
        client = access.client(request.headers.get(CLIENT_HEADER))
        if client is None:
            return "unauthenticated", f"address:{_address(request)}"
        who = f"client:{client.name}" if not access.clients_open else f"client@{_address(request)}"
        return ("client_read" if request.method in ("GET", "HEAD") else "client_write"), who
    if path == STUDIO_PREFIX or path.startswith(STUDIO_PREFIX + "/"):
        return "studio", f"session:{request.cookies.get(SESSION_COOKIE) or _address(request)}"
    return "public", f"address:{_address(request)}"


def _retry_after(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))


async def limited(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``handler``'s answer to ``request`` within the limits: its rate taken, a long poll or a stream
    counted while open (ApiError 429 beyond them)."""
    limiter = request.app[limits_key]
    kind, who = classify(request)
    if kind == "worker_poll":
        return await _held(limiter.polls, who, limiter.limits.max_open_polls_per_worker, "long polls", request, handler)
    if kind != "studio":  # the studio has its own sign-in; only its streams are counted here
        take_rate(limiter, kind, who)
    if "text/event-stream" in request.headers.get("Accept", ""):
        limit = limiter.limits.max_streams_per_client
        return await _held(limiter.streams, who, limit, "event streams", request, handler)
    return await handler(request)


def take_rate(limiter: Limiter, kind: str, who: str) -> None:
    """429 with ``Retry-After`` when ``who`` has no token left in its bucket of ``kind``."""
    rate = limiter.limits.rates[kind]
    if rate[0] <= 0:  # unlimited
        return
    wait_s = limiter.buckets.take(f"{kind}:{who}", rate)
    if wait_s > 0:
        raise ApiError(
            429,
            f"rate limit of {kind.replace('_', ' ')} requests reached; retry later",
            headers={"Retry-After": _retry_after(wait_s)},
        )


async def _held(
    slots: OpenSlots, who: str, limit: int, what: str, request: web.Request, handler: Handler
) -> web.StreamResponse:
    """``handler``'s answer, ``request`` counted in ``slots`` meanwhile (429 past ``limit``)."""
    slots.take(who, request, limit, what)
    try:
        return await handler(request)
    finally:
        slots.release(who, request)
