"""Signing in and out of the studio: the login page, its POST, logout, and the guard on attempts.

Sign-in attempts are rate limited per address, and logged once per burst of wrong tokens.

Each attempt takes a token from the address's ``sign_in`` bucket (``RATE_LIMIT_SIGN_IN_PER_SECOND``
and ``_BURST``, the API's own buckets); an address out of tokens gets 429 with ``Retry-After``.
A guesser's attempts, wrong or refused, are one burst until the address has been quiet for
:data:`QUIET_S`: the first of a burst is logged as a warning, the rest are not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import urlparse

from aiohttp import web

from avtomatika.api.errors import ApiError
from avtomatika.api.limits import Limiter, take_rate
from avtomatika.studio.access import OPERATOR
from avtomatika.studio.app_keys import access_key, prefix_key, sign_in_key
from avtomatika.studio.contexts import LoginContext
from avtomatika.studio.render import render_template, user_of

routes = web.RouteTableDef()

logger = logging.getLogger(__name__)

#: An address quiet this long starts a new burst (and a new log line) with its next wrong attempt.
QUIET_S = 60.0
#: Addresses remembered at most; beyond, those quiet longest are forgotten.
MAX_ADDRESSES = 10_000


class SignInGuard:
    """Rate limit and burst log of sign-ins, per remote address.

    Args:
        limiter: The buckets to take from (the API's, when the studio is mounted on it).
        clock: Seconds, monotonic.
    """

    def __init__(self, limiter: Limiter, clock: Callable[[], float] = time.monotonic) -> None:
        self.limiter = limiter
        self._clock = clock
        self._last_failure: dict[str, float] = {}

    def admit(self, request: web.BaseRequest) -> None:
        """Take a sign-in attempt for the request's address; ApiError 429 when its bucket is empty."""
        address = request.remote or "unknown"
        try:
            take_rate(self.limiter, "sign_in", f"address:{address}")
        except ApiError:
            self.failed(address, refused=True)
            raise

    def failed(self, address: str, *, refused: bool = False) -> None:
        """Record a wrong token (or a refused attempt) from ``address``; logged if it starts a burst."""
        at = self._clock()
        last = self._last_failure.get(address)
        self._last_failure[address] = at
        if last is None or at - last > QUIET_S:
            logger.warning(
                "studio: %s from %s; further failures from it are not logged until it is quiet for %g s",
                "a sign-in refused by the rate limit" if refused else "a sign-in with a wrong token",
                address,
                QUIET_S,
            )
        if len(self._last_failure) > MAX_ADDRESSES:
            self._forget(at)

    def _forget(self, at: float) -> None:
        for address, last in list(self._last_failure.items()):
            if at - last > QUIET_S:
                del self._last_failure[address]
        while len(self._last_failure) > MAX_ADDRESSES:  # all recent: forget the oldest
            del self._last_failure[min(self._last_failure, key=self._last_failure.__getitem__)]


def _safe_next(request: web.Request, target: str | None) -> str:
    """Where to go after sign-in: a path inside the studio, never another site."""
    prefix = request.app[prefix_key]
    parsed = urlparse(target or "")
    if parsed.scheme or parsed.netloc or not (target or "").startswith(prefix):
        return f"{prefix}/blueprints"
    return str(target)


@routes.get("/login", name="login")
async def login_page(request: web.Request) -> web.StreamResponse:
    context = LoginContext("Sign in", None, _safe_next(request, request.query.get("next")), "")
    return await render_template(request, "login.html", context, page=True, section="login")


@routes.post("/login", name="login_post")
async def login(request: web.Request) -> web.StreamResponse:
    """POST: check the token; a signed session cookie on success (CSRF was checked by the middleware)."""
    access = request.app[access_key]
    guard = request.app[sign_in_key]
    guard.admit(request)
    form = await request.post()
    name = str(form.get("name") or "").strip()[:60] or "operator"
    target = _safe_next(request, str(form.get("next") or ""))
    found = access.role_for(str(form.get("token") or "")) if access.mode == "token" else (OPERATOR, None)
    if found is None:
        guard.failed(request.remote or "unknown")
        context = LoginContext("Sign in", "Wrong token.", target, name)
        return await render_template(request, "login.html", context, 401, page=True, section="login")
    role, client = found
    response = web.HTTPSeeOther(target)
    access.write(response, request, access.sign_in(role, name, client))
    logger.info("studio: %s signed in as %s%s", name, role, f" of {client}" if client else "")
    raise response


@routes.post("/logout", name="logout")
async def logout(request: web.Request) -> web.StreamResponse:
    access = request.app[access_key]
    response = web.HTTPSeeOther(f"{request.app[prefix_key]}/login")
    access.write(response, request, access.fresh())
    logger.info("studio: %s signed out", user_of(request).name)
    raise response
