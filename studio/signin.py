"""Studio sign-in attempts: rate limited per address, and logged once per burst of wrong tokens.

Each attempt takes a token from the address's ``sign_in`` bucket (``RATE_LIMIT_SIGN_IN_PER_SECOND``
and ``_BURST``, the API's own buckets); an address out of tokens gets 429 with ``Retry-After``.
A guesser's attempts, wrong or refused, are one burst until the address has been quiet for
:data:`QUIET_S`: the first of a burst is logged as a warning, the rest are not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web

from avtomatika.api.errors import ApiError
from avtomatika.api.limits import Limiter, take_rate

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
