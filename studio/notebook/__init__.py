"""Jupyter widgets: author a blueprint with a live graph, step a job through it, watch an engine.

``from avtomatika.studio.notebook import BlueprintView, StepDebugger, EngineMonitor, JobHistory``. They reuse the
studio's graph (one SVG per blueprint version, live marks laid over it) and the engine's events, and
run their async work in the kernel's own event loop. Needs ``ipywidgets`` (the ``notebook`` extra);
``import avtomatika`` never imports this package.
"""

from __future__ import annotations

from avtomatika.debugger import DebugSession, debug_engine
from avtomatika.errors import DebuggerError

from .blueprint_view import BlueprintView
from .debugger import StepDebugger
from .history_view import JobHistory
from .monitor import EngineMonitor

__all__ = [
    "BlueprintView",
    "DebugSession",
    "DebuggerError",
    "EngineMonitor",
    "JobHistory",
    "StepDebugger",
    "debug_engine",
]
