"""Every application key of the studio, typed (a str key would warn, and warnings fail the tests)."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from avtomatika.engine import OrchestratorEngine
from avtomatika.studio.access import Session

if TYPE_CHECKING:
    from avtomatika.api.limits import Limiter
    from avtomatika.reads import Reader
    from avtomatika.studio.access import Access
    from avtomatika.studio.live import Broadcaster
    from avtomatika.studio.signin import SignInGuard

#: The engine the studio shows and operates; the studio calls it in-process, never over HTTP.
engine_key = web.AppKey("engine", OrchestratorEngine)
#: Where the studio is mounted ("/studio"), for links and for telling public paths apart.
prefix_key = web.AppKey("prefix", str)
#: The engine's read model (``engine.reads``): jobs, counts, timelines, workers, from live storage or history.
data_key: web.AppKey[Reader] = web.AppKey("data")
#: Who may do what: token or loopback mode, session signing.
access_key: web.AppKey[Access] = web.AppKey("access")
#: Fans the engine's events out to the open SSE streams.
broadcaster_key: web.AppKey[Broadcaster] = web.AppKey("broadcaster")
#: The browser's session, read by the access middleware (request storage, not app storage).
session_key = web.RequestKey("session", Session)
#: Live SSE responses, stopped on shutdown so the server does not wait for them.
sse_streams_key = web.AppKey("sse_streams", weakref.WeakSet[EventSourceResponse])
#: Rate buckets of the studio's actions: the API's own when the studio is mounted on the engine's app.
limiter_key: web.AppKey[Limiter] = web.AppKey("limiter")
#: Sign-in attempts per address, and their log.
sign_in_key: web.AppKey[SignInGuard] = web.AppKey("sign_in")
