"""Live state backends: :class:`MemoryStorage` (the embedded default) and ``RedisStorage``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import Commit, JobFilter, Storage, TaskPoll
from .memory import MemoryStorage

if TYPE_CHECKING:
    from .redis import RedisStorage

__all__ = ["Commit", "JobFilter", "MemoryStorage", "RedisStorage", "Storage", "TaskPoll"]


def __getattr__(name: str) -> Any:
    if name == "RedisStorage":  # imported on first use: redis-py is the optional [redis] extra
        from .redis import RedisStorage

        return RedisStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
