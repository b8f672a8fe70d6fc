"""Running the widgets' coroutines in the kernel's event loop.

A button's ``on_click`` callback is synchronous, but the engine is async. The kernel handles widget
messages inside its running asyncio loop (the same loop that runs top-level ``await`` in cells and
the engine's background tasks), so a callback schedules its coroutine there. :class:`Background`
keeps those tasks, reports their errors, and lets tests and cells wait for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger(__name__)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop (the kernel's, in a notebook), or None outside one."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Background:
    """Tasks a widget started in the running loop; errors go to ``on_error``.

    Args:
        name: Prefix of the tasks' names.
        on_error: Called with each exception a task raised (shown in the widget).
    """

    def __init__(self, name: str, on_error: Callable[[BaseException], None]) -> None:
        self.name = name
        self.on_error = on_error
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], what: str = "") -> asyncio.Task[Any] | None:
        """Run ``coroutine`` in the running loop; without one, close it and report why."""
        loop = running_loop()
        if loop is None:
            coroutine.close()
            self.on_error(RuntimeError("no running event loop: use this widget in a Jupyter kernel, or await it"))
            return None
        task = loop.create_task(coroutine, name=f"{self.name}-{what or 'action'}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.debug("%s failed", task.get_name(), exc_info=error)
            self.on_error(error)

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    async def wait(self) -> None:
        """Wait until every task started so far (and those they start) has ended."""
        current = asyncio.current_task()
        while pending := [t for t in self._tasks if t is not current]:
            await asyncio.wait(pending)

    async def cancel(self) -> None:
        """Cancel every task and wait for them to end."""
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    def cancel_soon(self) -> None:
        """Cancel every task without waiting (from synchronous code)."""
        for task in list(self._tasks):
            task.cancel()
