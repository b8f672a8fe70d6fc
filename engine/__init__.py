"""Avtomatika: a state-machine orchestrator for long-running jobs."""

from .blueprint import StateMachineBlueprint
from .config import Config
from .engine import OrchestratorEngine
from .errors import AvtomatikaError, BlueprintInvalid, ConditionError, HandlerError
from .models import Job, JobStatus
from .runtime.context import JobContext

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
