"""A test-only kill switch: SIGKILL this process right after a named write to storage or history.

The crash-point harness (``tests/test_crash_points.py``) starts engine processes with
``AVTOMATIKA_CRASH_AT=<boundary>`` (and optionally ``AVTOMATIKA_CRASH_AFTER=<n>``, the n-th time it
is reached; 1 by default) and checks that another engine finishes every job. A boundary is named
``<Class.method>:<write>``: the engine method that asked for the write (the first method of an engine
class on the stack, outside the committer and storage) and the storage or history method that wrote,
e.g. ``ResultProcessor._branch_done:add_branch_result`` or ``Operations.cancel:commit``. The same
names are enumerated from the source by the harness, so a new write boundary without a case fails it.

Without the variable nothing is wrapped and nothing costs anything.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Storage methods that change live state, with the name the committer's calls are known by.
STORAGE_WRITES = frozenset(
    {
        "create_job",
        "commit",
        "take_runnable",
        "ack_runnable",
        "lease_and_get_job",
        "finish_step",
        "update_task",
        "take_task",
        "add_branch_result",
        "claim_timers",
        "finish_timers",
        "save_worker",
        "expire_workers",
        "trim_feed",
        "lease_feed",
        "set_breakpoint",
        "remove_breakpoint",
        "create_bulk",
        "save_bulk",
    }
)
#: History methods that change it.
HISTORY_WRITES = frozenset({"write", "write_feed"})
#: Committer methods, and the storage write each one makes.
COMMITTER_WRITES = {"apply": "commit", "update_job": "commit", "create_job": "create_job"}
#: Modules whose frames are the write's plumbing, not the path that asked for it.
_PLUMBING = ("avtomatika.runtime.commits", "avtomatika.server.crashpoints", "avtomatika.storage")

_ARMED = os.environ.get("AVTOMATIKA_CRASH_AT") or None
_AFTER = int(os.environ.get("AVTOMATIKA_CRASH_AFTER") or 1)
_hits = 0


def armed() -> str | None:
    """The boundary this process dies at, or None (the switch is off)."""
    return _ARMED


def wrap(target: T, writes: frozenset[str]) -> T:
    """``target`` itself when the switch is off; else a proxy that may die after each of ``writes``."""
    if _ARMED is None:
        return target
    return _Crashing(target, writes)  # type: ignore[return-value]


class _Crashing:
    """Forwards every attribute to its target; its write methods die at the armed boundary."""

    def __init__(self, target: Any, writes: frozenset[str]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_writes", writes)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name in self._writes and callable(value):
            return _after(name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)


#: Writes that may change nothing, and how to tell from their arguments and answer: no boundary then.
_CHANGED_NOTHING: dict[str, Callable[[tuple[Any, ...], Any], bool]] = {
    "take_runnable": lambda args, result: result is None,
    "take_task": lambda args, result: result is None,
    "lease_and_get_job": lambda args, result: not result[0],
    "claim_timers": lambda args, result: not result,
    "finish_timers": lambda args, result: not args[0],
    "expire_workers": lambda args, result: not result,
    "lease_feed": lambda args, result: not result,
    "update_task": lambda args, result: result is None,
    "remove_breakpoint": lambda args, result: result is None,
    "save_bulk": lambda args, result: not result,
}


def _after(write: str, method: Callable[..., Any]) -> Callable[..., Any]:
    changed_nothing = _CHANGED_NOTHING.get(write)

    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        result = await method(*args, **kwargs)
        if changed_nothing is None or not changed_nothing(args, result):
            _reached(f"{_caller()}:{write}")
        return result

    return call


def _caller() -> str:
    """The engine method that asked for the write: the first method outside the plumbing."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        name = frame.f_code.co_qualname
        if module.startswith("avtomatika.") and not module.startswith(_PLUMBING) and "." in name:
            return name.split(".<locals>")[0]
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


def _reached(boundary: str) -> None:
    global _hits
    if boundary != _ARMED:
        return
    _hits += 1
    if _hits >= _AFTER:
        sys.stderr.write(f"crash point reached: {boundary} (hit {_hits}); SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
