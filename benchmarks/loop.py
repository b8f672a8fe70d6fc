"""The event loop of the harness's own processes (load generator, workers): uvloop when importable.

uvloop's transports and loop cost less CPU per request than asyncio's, and the harness shares the
machine's CPUs with the engine it measures. The engine picks its own loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on a uvloop loop if uvloop is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def loop_name() -> str:
    """The running loop's kind, for the report: ``uvloop`` or ``asyncio``."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
