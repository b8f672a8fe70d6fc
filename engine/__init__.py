"""Avtomatika: a state-machine orchestrator for long-running jobs.

Its names are imported when first used (PEP 562): ``import avtomatika.history.sqlite_process``, the
process that writes SQLite history, then starts without the engine, aiohttp or pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_names

if TYPE_CHECKING:
    from .blueprint import StateMachineBlueprint
    from .config import Config
    from .engine import OrchestratorEngine
    from .errors import AvtomatikaError, BlueprintInvalid, ConditionError, HandlerError
    from .models import Job, JobStatus
    from .runtime.context import JobContext

#: Each public name and the module it lives in.
_WHERE = {
    "AvtomatikaError": ".errors",
    "BlueprintInvalid": ".errors",
    "ConditionError": ".errors",
    "Config": ".config",
    "HandlerError": ".errors",
    "Job": ".models",
    "JobContext": ".runtime.context",
    "JobStatus": ".models",
    "OrchestratorEngine": ".engine",
    "StateMachineBlueprint": ".blueprint",
}
__all__ = [
    "AvtomatikaError",
    "BlueprintInvalid",
    "ConditionError",
    "Config",
    "HandlerError",
    "Job",
    "JobContext",
    "JobStatus",
    "OrchestratorEngine",
    "StateMachineBlueprint",
]
__version__ = "1.1.0.dev0"


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
