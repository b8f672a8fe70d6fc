"""The history feed's entries: a commit's events as history will write them, taken when committed.

Live storage keeps one entry per commit (and per task taken) in the same atomic change, in the order
the changes were applied; the history writer reads them (``avtomatika.history.writer``). An entry is
the JSON list of its events' rows, each ``[kind, job_id, at, blueprint, state, status, data_json,
facts]``: ``data_json`` is the event's data as JSON text, ``facts`` the few scalars of it history's
projection reads (see ``avtomatika.history.records``). Taking the row at commit time means what a
handler changes afterwards is never seen, and the writer builds its records without parsing the
data again. Redis's take script writes the row of a ``task_taken`` event itself (see
``storage/redis/scripts.py``): keep the two in step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # not at run time: history's SQLite process reads feed entries without asyncio
    from .events import Event

#: The few scalar fields of ``Event.data`` history's projection reads; the rest is only stored.
FACT_KEYS = frozenset(
    {"previous", "client", "blueprint_version", "parent_job_id", "error", "worker_id", "duration_ms", "state"}
)
#: For isinstance on hot paths: a tuple is checked ~3 times faster than ``str | int | ...``, which
#: builds a union object each time it is evaluated.
_SCALAR_TYPES = (str, int, float, bool)
_MAX_UNSERIALIZABLE_CHARS = 10_000

#: A row: kind, job id, at, blueprint, state, status, data as JSON text, facts.
FeedRow = tuple[str, str, float, str | None, str | None, str | None, str, dict[str, Any]]


def _json_default(value: object) -> object:
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def dump_json(data: Any) -> str:
    """JSON text of ``data``; values JSON does not know become strings, never an exception."""
    try:  # most data has string keys and JSON values only: orjson without options is ~2x faster
        return orjson.dumps(data).decode()
    except TypeError:  # orjson.JSONEncodeError: what the options below may still write
        pass
    try:
        return orjson.dumps(data, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, ValueError) as exc:  # circular, or an integer wider than 64 bits
        text = repr(data)[:_MAX_UNSERIALIZABLE_CHARS]
        return orjson.dumps({"unserializable": text, "reason": str(exc)}).decode()


#: The exact types of most facts (a set lookup, cheaper than isinstance); others go through _scalar.
_PLAIN_TYPES = frozenset(_SCALAR_TYPES)


def _scalar(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, _SCALAR_TYPES):
        return value
    return str(value)


def row_of(event: Event) -> FeedRow:
    """The row of ``event`` (which must name a job); a fact holding None is left out."""
    data = event.data if isinstance(event.data, dict) else {"value": event.data}
    facts = {
        k: v if type(v) in _PLAIN_TYPES else _scalar(v) for k, v in data.items() if k in FACT_KEYS and v is not None
    }
    status = event.status
    return (
        str(event.kind),
        str(event.job_id),
        float(event.at),
        event.blueprint,
        event.state,
        str(status) if status is not None else None,
        dump_json(data),
        facts,
    )


def entry_of(events: Iterable[Event]) -> bytes:
    """The feed entry of ``events`` (those that belong to no job are left out); b"" for none."""
    rows = [row_of(event) for event in events if event.job_id]
    return orjson.dumps(rows) if rows else b""


def rows_of(entry: bytes | str) -> list[list[Any]]:
    """The rows of a feed entry (lists, as JSON reads them: a row's fields in :data:`FeedRow` order)."""
    rows: list[list[Any]] = orjson.loads(entry)
    return rows
