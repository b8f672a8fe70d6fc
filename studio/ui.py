"""How statuses, times and values look: one colour ("tone") per status, everywhere.

These are registered as Jinja filters and globals by :func:`setup_templates`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from avtomatika.api.views import iso as iso_time
from avtomatika.models import JobStatus

#: The six colours of the studio, light and dark; every status is shown in one of them. The one source of
#: the CSS variables ``--c-<tone>`` and the ``.tone-<tone>`` classes, in the studio (``base.html``) and in
#: the notebook's widgets.
PALETTE: dict[str, tuple[str, str]] = {
    "running": ("#2563eb", "#60a5fa"),
    "waiting": ("#7c3aed", "#a78bfa"),
    "quarantined": ("#d97706", "#fbbf24"),
    "failed": ("#dc2626", "#f87171"),
    "finished": ("#16a34a", "#4ade80"),
    "cancelled": ("#6b7280", "#9ca3af"),
}
TONES = tuple(PALETTE)

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
    JobStatus.LOST: "cancelled",
}
#: A task's (or fan-out branch's) status in the studio's colours.
_TASK_TONE = {
    "done": "finished",
    "running": "running",
    "queued": "waiting",
    "failed": "failed",
    "retrying": "failed",
    "withdrawn": "cancelled",
    "held": "quarantined",
}
#: Which tone wins when a node holds jobs of several statuses (most urgent first).
TONE_URGENCY = ("quarantined", "failed", "running", "waiting", "finished", "cancelled")


def palette_variables(*, dark: bool = False) -> str:
    """``--c-running: #2563eb; ...``: the palette as CSS variables (its dark colours with ``dark``)."""
    return " ".join(f"--c-{name}: {colours[dark]};" for name, colours in PALETTE.items())


def tone_rules(scope: str = "") -> str:
    """``.tone-running { --tone: var(--c-running); } ...``: a class per tone, inside ``scope`` if given."""
    inside = f"{scope} " if scope else ""
    return "\n".join(f"{inside}.tone-{name} {{ --tone: var(--c-{name}); }}" for name in PALETTE)


def palette_css() -> str:
    """The studio's palette: the variables, light and dark (``prefers-color-scheme``), and the tone classes."""
    return (
        f":root {{ {palette_variables()} }}\n"
        f"@media (prefers-color-scheme: dark) {{ :root {{ {palette_variables(dark=True)} }} }}\n{tone_rules()}"
    )


def tone(status: str | None) -> str:
    """The colour of ``status`` (``"running"`` for anything unknown)."""
    return _TONE_OF.get(str(status), "running") if status else "running"


def task_tone(status: str | None) -> str:
    """The colour of a task's status (queued, running, done, failed...)."""
    return _TASK_TONE.get(str(status), "cancelled")


def human(status: str | None) -> str:
    """``waiting_for_worker`` -> ``waiting for worker``."""
    return str(status or "").replace("_", " ")


def when(timestamp: float | None) -> str:
    """A date and time with its zone: ``2026-11-26 12:01:03 UTC``."""
    if timestamp is None:
        return "—"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def when_ms(timestamp: float | None) -> str:
    """:func:`when` to the millisecond, for timelines: ``2026-11-26 12:01:03.120 UTC``."""
    if timestamp is None:
        return "—"
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


def since(timestamp: float | None, start: float | None) -> str:
    """``+1.2 s``: how long after ``start``."""
    if timestamp is None or start is None:
        return "—"
    return "+" + duration(max(timestamp - start, 0.0))


def compact_number(n: int) -> str:
    """``999``, ``1.2k``, ``35k``, ``1.2M``: a count that fits a badge."""
    if n < 1000:
        return str(n)
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1000, "k")):
        if n >= size:
            value = n / size
            return f"{value:.1f}{suffix}".replace(".0", "") if value < 10 else f"{value:.0f}{suffix}"
    return str(n)


def iso(timestamp: float | None) -> str:
    """The time in ISO 8601 as the API writes it; empty for none."""
    return iso_time(timestamp) or ""


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


def bar(
    start: float | None, middle: float | None, end: float | None, span: tuple[float, float]
) -> list[dict[str, Any]]:
    """A task's duration bar on the job's time span: waiting (``start`` to ``middle``, when a worker
    took it) then running (to ``end``, its answer; to the span's end while unanswered). Each part's
    ``left`` and ``width`` are percentages of the span."""
    first, last = span
    if start is None or last <= first:
        return []
    total = last - first

    def part(kind: str, a: float, b: float) -> dict[str, Any]:
        left = min(max((a - first) / total, 0.0), 1.0)
        width = max(min((b - a) / total, 1.0 - left), 0.004)
        return {"kind": kind, "left": round(left * 100, 2), "width": round(width * 100, 2)}

    stop = end if end is not None else last
    if middle is None:
        return [part("wait", start, stop)]
    return [part("wait", start, middle), part("run", middle, stop)]


def pretty_json(value: Any) -> str:
    """Indented JSON for ``<pre>`` blocks and editors."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def short_id(job_id: str) -> str:
    return job_id[:8]


FILTERS = {
    "tone": tone,
    "task_tone": task_tone,
    "when_ms": when_ms,
    "since": since,
    "compact_number": compact_number,
    "human": human,
    "when": when,
    "iso": iso,
    "duration": duration,
    "age": age,
    "pretty_json": pretty_json,
    "short_id": short_id,
}
