"""Live pages: the engine's events fanned out to SSE streams, each page's feed turning them into partials.

One :class:`Broadcaster` subscribes to ``engine.events`` for the whole studio and copies every event
into the queue of each open stream (the bus callback must be quick). A stream's handler waits for
events, gathers what arrives within :data:`COALESCE_S` (closing early after :data:`QUIET_S` without
one), asks its page's :class:`Feed` what to send,
renders those partials and sends them as named SSE events (see :mod:`avtomatika.studio.sse`).

On (re)connection a stream first sends the feed's snapshot, so a page that lost its connection (the
htmx SSE extension reconnects by itself, with backoff) catches up on whatever it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from avtomatika.engine import OrchestratorEngine
from avtomatika.events import Event, EventKind
from avtomatika.studio.app_keys import broadcaster_key, data_key, engine_key, sse_streams_key
from avtomatika.studio.partial_contexts import NavCountsContext
from avtomatika.studio.render import render_string, user_of
from avtomatika.studio.sse import SseEvent

logger = logging.getLogger(__name__)

#: Events arriving this soon after the first one are sent in the same round (at most).
COALESCE_S = 0.05
#: A round closes early once no event came for this long, so a lone change is not held for
#: COALESCE_S; a steady stream of events still goes out in rounds of COALESCE_S.
QUIET_S = 0.005
#: How often an idle stream checks that its client is still there (aiohttp-sse pings it too).
IDLE_CHECK_S = 10.0
#: Events a stream may fall behind by before it is resynchronised with a snapshot instead.
QUEUE_SIZE = 2000
#: Events that change the navigation bar's counts.
NAV_KINDS = frozenset(
    {
        EventKind.JOB_QUARANTINED,
        EventKind.JOB_HELD,
        EventKind.JOB_CONTINUED,
        EventKind.JOB_RELEASED,
        EventKind.JOB_RETRIED,
        EventKind.JOB_FAILED,
        EventKind.JOB_CANCELLED,
        EventKind.WORKER_REGISTERED,
        EventKind.WORKER_EXPIRED,
    }
)

Update = tuple[SseEvent, Any]  # an event name and the context its partial is rendered with
_CLOSED = object()  # the broadcaster stopped: streams end
_RESYNC = object()  # the stream fell behind: send a snapshot


class Feed(Protocol):
    """What one page shows live."""

    async def snapshot(self) -> list[Update]:
        """Everything live on the page, sent when a stream (re)connects."""
        ...

    async def changes(self, events: list[Event]) -> list[Update]:
        """What to send after ``events``."""
        ...


FeedFactory = Callable[[web.Request], Feed]


class Broadcaster:
    """Copies every engine event into the queue of each listening stream.

    Args:
        engine: Whose ``events`` bus to subscribe to.
    """

    def __init__(self, engine: OrchestratorEngine) -> None:
        self.engine = engine
        self._queues: set[asyncio.Queue[object]] = set()
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self.engine.events.subscribe(self._publish)

    def stop(self) -> None:
        """Unsubscribe and end every stream."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for queue in list(self._queues):
            _replace_all(queue, _CLOSED)

    def _publish(self, event: Event) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                _replace_all(queue, _RESYNC)

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Queue[object]]:
        queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)


def _replace_all(queue: asyncio.Queue[object], marker: object) -> None:
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(marker)


async def _next_round(queue: asyncio.Queue[object]) -> list[object]:
    """The next event and what follows it (gaps under :data:`QUIET_S`, :data:`COALESCE_S` in all); [] when idle."""
    try:
        first = await asyncio.wait_for(queue.get(), IDLE_CHECK_S)
    except TimeoutError:
        return []
    found = [first]
    loop = asyncio.get_running_loop()
    until = loop.time() + COALESCE_S
    while first is not _CLOSED and (left := until - loop.time()) > 0:
        try:
            found.append(await asyncio.wait_for(queue.get(), min(left, QUIET_S)))
        except TimeoutError:
            break
        if found[-1] is _CLOSED:
            break
    return found


async def nav_update(request: web.Request) -> Update:
    return SseEvent.NAV_COUNTS, NavCountsContext(await request.app[data_key].nav_counts(user_of(request).scope))


async def _send(request: web.Request, stream: EventSourceResponse, updates: list[Update]) -> None:
    for name, context in updates:
        html = await render_string(request, name.partial, context)
        await stream.send(html, event=name)  # multi-line data is split into "data:" lines


async def _updates_for(request: web.Request, feed: Feed, batch: list[object]) -> list[Update] | None:
    """What to send for one round; None when the broadcaster closed."""
    if any(item is _CLOSED for item in batch):
        return None
    if any(item is _RESYNC for item in batch):
        return [*await feed.snapshot(), await nav_update(request)]
    events = [item for item in batch if isinstance(item, Event)]
    updates = await feed.changes(events) if events else []
    if any(e.kind in NAV_KINDS for e in events):
        updates.append(await nav_update(request))
    return updates


async def stream_feed(request: web.Request, feed: Feed) -> web.StreamResponse:
    """Serve ``feed`` as an SSE stream until the client leaves or the studio shuts down."""
    streams = request.app[sse_streams_key]
    async with sse_response(request) as stream:
        streams.add(stream)
        try:
            with request.app[broadcaster_key].listen() as queue:
                await _send(request, stream, [*await feed.snapshot(), await nav_update(request)])
                while stream.is_connected():
                    updates = await _updates_for(request, feed, await _next_round(queue))
                    if updates is None:
                        break
                    await _send(request, stream, updates)
        except (ConnectionResetError, ConnectionError):
            logger.debug("studio: SSE client left %s", request.path)
        finally:
            streams.discard(stream)
    return stream


async def broadcaster_ctx(app: web.Application) -> AsyncIterator[None]:
    """Subscribe to the engine's events for the studio's lifetime."""
    broadcaster = Broadcaster(app[engine_key])
    app[broadcaster_key] = broadcaster
    broadcaster.start()
    yield
    broadcaster.stop()


async def close_streams(app: web.Application) -> None:
    """On shutdown: end every SSE stream, so the server does not wait for them."""
    app[broadcaster_key].stop()
    streams = list(app[sse_streams_key])
    for stream in streams:
        with contextlib.suppress(RuntimeError):
            stream.stop_streaming()
    if streams:
        await asyncio.gather(*(s.wait() for s in streams), return_exceptions=True)
