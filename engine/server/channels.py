"""Open WebSocket connections to workers, to push commands (``cancel_task``) to them.

A worker connects as itself (``/_worker/ws/{worker_id}``, or ``/_worker/ws`` with its own token) or,
as the SDK 1.0b1 does under the global token, anonymously: commands for a worker without a socket of
its own go to every anonymous socket, and workers ignore tasks that are not theirs.

With several engine processes on one storage (Redis), a worker's socket may be open on another
engine: a command this engine cannot hand to the worker's own socket is also published to the other
engines (:meth:`WorkerChannels.run_relay`), and each hands it to its sockets the same way. The relay
is at most once (pub/sub): an engine reconnecting to Redis misses what is published meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSCloseCode, web

if TYPE_CHECKING:
    from ..events import EventTransport

logger = logging.getLogger(__name__)


class WorkerChannels:
    def __init__(self) -> None:
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._anonymous: set[web.WebSocketResponse] = set()
        #: Names this process's relayed commands, so it does not deliver its own twice.
        self.origin = uuid.uuid4().hex
        self._relay: EventTransport | None = None
        #: Commands received from other engines and handed to a socket here.
        self.relayed_in = 0

    def attach(self, worker_id: str | None, socket: web.WebSocketResponse) -> None:
        if worker_id is None:
            self._anonymous.add(socket)
        else:
            self._sockets[worker_id] = socket

    def detach(self, worker_id: str | None, socket: web.WebSocketResponse) -> None:
        if worker_id is None:
            self._anonymous.discard(socket)
        elif self._sockets.get(worker_id) is socket:
            del self._sockets[worker_id]

    def connected(self, worker_id: str) -> bool:
        """Whether the worker's own socket is open on this engine (another engine may hold it)."""
        return worker_id in self._sockets

    async def send(self, worker_id: str, message: dict[str, Any]) -> bool:
        """Send to the worker's own socket, else to every anonymous one and to the other engines.

        False when nobody got it: no socket here took it and there is no other engine to ask (or the
        relay failed). True once relayed, since whether another engine holds the socket is unknown.
        """
        if await self._deliver(worker_id, message, own_only=True):
            return True
        delivered = await self._deliver(worker_id, message)
        relay = self._relay
        if relay is not None:
            payload = orjson.dumps({"origin": self.origin, "worker_id": worker_id, "message": message})
            try:
                await relay.publish_events([payload])
                delivered = True
            except Exception as exc:
                logger.warning(
                    "could not relay %s for worker %s to other engines: %s", message.get("command"), worker_id, exc
                )
        return delivered

    async def _deliver(self, worker_id: str, message: dict[str, Any], *, own_only: bool = False) -> bool:
        """Hand ``message`` to the worker's own socket here, else (unless ``own_only``) to the anonymous ones."""
        own = self._sockets.get(worker_id)
        if own is not None and not own.closed:
            targets = [own]
        elif own_only:
            return False
        else:
            targets = [s for s in self._anonymous if not s.closed]
        delivered = False
        for socket in targets:
            try:
                await socket.send_json(message)
                delivered = True
            except (ConnectionError, RuntimeError) as exc:
                logger.warning("could not send %s to worker %s: %s", message.get("command"), worker_id, exc)
        return delivered

    async def cancel_task(self, worker_id: str, job_id: str, task_id: str) -> bool:
        """Ask a worker to stop a task; both keys, as workers of both generations read one or the other."""
        message = {"command": "cancel_task", "type": "cancel_task", "task_id": task_id, "job_id": job_id}
        return await self.send(worker_id, message)

    async def run_relay(self, transport: EventTransport) -> None:
        """Exchange commands with the other engines on ``transport`` until cancelled (reconnecting)."""
        self._relay = transport
        delay_s = 0.05
        try:
            while True:
                try:
                    async for payload in transport.listen_events():
                        delay_s = 0.05
                        await self._on_relayed(payload)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.warning("lost the worker command relay (%s); reconnecting", exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 2.0)
        finally:
            self._relay = None

    async def _on_relayed(self, payload: bytes) -> None:
        try:
            data = orjson.loads(payload)
            if data.get("origin") == self.origin:
                return
            worker_id, message = str(data["worker_id"]), dict(data["message"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("ignored a malformed relayed worker command: %r", payload[:200])
            return
        if await self._deliver(worker_id, message):
            self.relayed_in += 1

    async def close_all(self) -> None:
        """Close every worker socket (the engine is stopping: workers connect again to another)."""
        for socket in [*self._sockets.values(), *self._anonymous]:
            await socket.close(code=WSCloseCode.GOING_AWAY, message=b"engine stopping")
        self._sockets.clear()
        self._anonymous.clear()
