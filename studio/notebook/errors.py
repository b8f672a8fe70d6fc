"""The step debugger's own error."""

from __future__ import annotations

from avtomatika.errors import AvtomatikaError


class DebuggerError(AvtomatikaError):
    """What the debugger cannot do now (answer a task when none is waiting, go back to no step...)."""
