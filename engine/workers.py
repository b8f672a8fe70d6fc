"""Open WebSocket connections to workers, to push commands (``cancel_task``) to them.

A worker connects as itself (``/_worker/ws/{worker_id}``, or ``/_worker/ws`` with its own token) or,
as the SDK 1.0b1 does under the global token, anonymously: commands for a worker without a socket of
its own go to every anonymous socket, and workers ignore tasks that are not theirs.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)


class WorkerChannels:
    def __init__(self) -> None:
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._anonymous: set[web.WebSocketResponse] = set()

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
        return worker_id in self._sockets

    async def send(self, worker_id: str, message: dict[str, Any]) -> bool:
        """Send to the worker's own socket, else to every anonymous one; False when nobody got it."""
        own = self._sockets.get(worker_id)
        targets = [own] if own is not None and not own.closed else [s for s in self._anonymous if not s.closed]
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

    async def close_all(self) -> None:
        for socket in [*self._sockets.values(), *self._anonymous]:
            await socket.close()
        self._sockets.clear()
        self._anonymous.clear()
