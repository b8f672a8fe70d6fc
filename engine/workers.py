"""Open WebSocket connections to workers, to push commands (``cancel_task``) to them."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)


class WorkerChannels:
    def __init__(self) -> None:
        self._sockets: dict[str, web.WebSocketResponse] = {}

    def attach(self, worker_id: str, socket: web.WebSocketResponse) -> None:
        self._sockets[worker_id] = socket

    def detach(self, worker_id: str, socket: web.WebSocketResponse) -> None:
        if self._sockets.get(worker_id) is socket:
            del self._sockets[worker_id]

    def connected(self, worker_id: str) -> bool:
        return worker_id in self._sockets

    async def send(self, worker_id: str, message: dict[str, Any]) -> bool:
        socket = self._sockets.get(worker_id)
        if socket is None or socket.closed:
            return False
        try:
            await socket.send_json(message)
        except (ConnectionError, RuntimeError) as exc:
            logger.warning("could not send %s to worker %s: %s", message.get("command"), worker_id, exc)
            return False
        return True

    async def cancel_task(self, worker_id: str, job_id: str, task_id: str) -> bool:
        """Ask a worker to stop a task; both keys, as workers of both generations read one or the other."""
        return await self.send(
            worker_id, {"command": "cancel_task", "type": "cancel_task", "task_id": task_id, "job_id": job_id}
        )

    async def close_all(self) -> None:
        for socket in list(self._sockets.values()):
            await socket.close()
        self._sockets.clear()
