"""How statuses, times and values look: one colour ("tone") per status, everywhere.

These are registered as Jinja filters and globals by :func:`setup_templates`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from ..models import JobStatus

#: The six colours of the studio; every status is shown in one of them.
TONES = ("running", "waiting", "quarantined", "failed", "finished", "cancelled")

_TONE_OF: dict[str, str] = {
    JobStatus.PENDING: "running",
    JobStatus.RUNNING: "running",
    JobStatus.WAITING_FOR_WORKER: "waiting",
    JobStatus.WAITING_FOR_HUMAN: "waiting",
    JobStatus.WAITING_FOR_PARALLEL_TASKS: "waiting",
    JobStatus.WAITING_FOR_SUB_JOB: "waiting",
    JobStatus.AWAITING_RETRY: "waiting",
    JobStatus.HELD: "waiting",  # for an operator, at a breakpoint
    JobStatus.QUARANTINED: "quarantined",
    JobStatus.FAILED: "failed",
    JobStatus.FINISHED: "finished",
    JobStatus.CANCELLED: "cancelled",
}
#: Which tone wins when a node holds jobs of several statuses (most urgent first).
TONE_URGENCY = ("quarantined", "failed", "running", "waiting", "finished", "cancelled")


def tone(status: str | None) -> str:
    """The colour of ``status`` (``"running"`` for anything unknown)."""
    return _TONE_OF.get(str(status), "running") if status else "running"


def human(status: str | None) -> str:
    """``waiting_for_worker`` -> ``waiting for worker``."""
    return str(status or "").replace("_", " ")


def when(timestamp: float | None) -> str:
    """A UTC time of day with the date when it is not today: ``12:01:03`` or ``2026-11-26 12:01``."""
    if timestamp is None:
        return "—"
    moment = datetime.fromtimestamp(timestamp, UTC)
    if moment.date() == datetime.now(UTC).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def iso(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp is not None else ""


def duration(seconds: float | None) -> str:
    """``850 ms``, ``12 s``, ``3 min 4 s``, ``2 h 5 min``, ``3 d 4 h``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def age(timestamp: float | None) -> str:
    """How long ago ``timestamp`` was, as :func:`duration` says it."""
    return duration(max(time.time() - timestamp, 0.0)) if timestamp is not None else "—"


def pretty_json(value: Any) -> str:
    """Indented JSON for ``<pre>`` blocks and editors."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def short_id(job_id: str) -> str:
    return job_id[:8]


FILTERS = {
    "tone": tone,
    "human": human,
    "when": when,
    "iso": iso,
    "duration": duration,
    "age": age,
    "pretty_json": pretty_json,
    "short_id": short_id,
}
