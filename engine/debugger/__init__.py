"""The step debugger's engine side: one job stepped by hand, with checkpoints to go back to.

:class:`DebugSession` steps a job with the engine's own runner and committer on an engine that does
not step jobs itself (:func:`debug_engine`); the notebook's ``StepDebugger`` is its widget face.
"""

from .session import ACTOR, DebugSession, debug_engine

__all__ = ["ACTOR", "DebugSession", "debug_engine"]
