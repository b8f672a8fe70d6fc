"""``make_debugger``: StepDebuggers made in a test, closed (engines stopped) after it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest


@pytest.fixture
async def make_debugger() -> AsyncIterator[Callable[..., Any]]:
    from avtomatika.studio.notebook import StepDebugger

    made: list[StepDebugger] = []

    async def make(*args: Any, **kwargs: Any) -> StepDebugger:
        debugger = StepDebugger(*args, **kwargs)
        made.append(debugger)
        return await debugger.ready()

    yield make
    for debugger in made:
        await debugger.aclose()
