"""The event loop of the harness's own processes (load generator, workers): uvloop when importable.

uvloop's loop and transports cost less CPU per request than asyncio's, and the harness shares the
machine's CPUs with the engine it measures. The engine picks its own loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on CPython/Linux
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")
#: The harness's loop, for the report.
LOOP = "asyncio" if uvloop is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on a uvloop loop if uvloop is installed."""
    return asyncio.run(main) if uvloop is None else uvloop.run(main)
