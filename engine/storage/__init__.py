"""Live state backends: :class:`MemoryStorage` is the embedded default."""

from __future__ import annotations

from .base import Commit, JobFilter, Storage
from .memory import MemoryStorage

__all__ = ["Commit", "JobFilter", "MemoryStorage", "Storage"]
