"""One engine per port in a process: an engine started on a port that another engine of this process
still serves stops that one first.

In a notebook, running again the cell that creates and starts an engine makes a new engine while the
old one (no longer named by any variable) still serves the port, and starting the new one failed with
``OSError: address in use``. The engine that starts now stops the old one (with a warning) when both
run in the same event loop; an engine running in another thread's loop is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine import OrchestratorEngine

logger = logging.getLogger(__name__)

_serving: dict[int, weakref.ref[OrchestratorEngine]] = {}


async def take_over(engine: OrchestratorEngine, port: int) -> None:
    """Before ``engine`` listens on ``port``: stop the engine of this process serving it, if in this loop."""
    found = _serving.get(port)
    previous = found() if found is not None else None
    if not port or previous is None or previous is engine or previous.app is None:
        return
    if previous.lifecycle.loop is not asyncio.get_running_loop():
        return  # another thread's engine: binding fails as it would without us
    logger.warning("port %s is served by an earlier engine of this process: stopping it first", port)
    await previous.stop()


def serving(engine: OrchestratorEngine, port: int) -> None:
    """Note that ``engine`` now serves ``port``."""
    _serving[port] = weakref.ref(engine)


def forget(engine: OrchestratorEngine) -> None:
    """``engine`` stopped serving."""
    for port, found in list(_serving.items()):
        if found() in (engine, None):
            del _serving[port]
