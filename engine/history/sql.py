"""SQL shared by both backends, written once with a placeholder style (``?`` or ``$n``).

Both SQLite (3.15+) and PostgreSQL compare row values, so the keyset condition of the job list is
``(created_at, id) < (:created_at, :id)``, which both use with an index ending in ``created_at, id``.
"""

from __future__ import annotations

from typing import Any, Literal

from .base import VOLATILE_FEED_PREFIX, Cursor, HistoryFilter
from .records import EVENT_COLUMNS, JOB_COLUMNS

JOB_SELECT = ", ".join(JOB_COLUMNS)
EVENT_SELECT = ", ".join(EVENT_COLUMNS)
#: The kind of the lines :meth:`~avtomatika.history.base.HistoryStorage.worker_outcomes` reads.
RESULT_KIND = "task_result"


class Params:
    """Collects query parameters and answers their placeholders in the backend's style."""

    __slots__ = ("style", "values")

    def __init__(self, style: Literal["qmark", "numeric"]) -> None:
        self.style = style
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return "?" if self.style == "qmark" else f"${len(self.values)}"


def prefix_range(prefix: str) -> tuple[str, str] | None:
    """``[low, high)`` holding exactly the strings that start with ``prefix`` (byte/code-point order).

    None when there is no upper bound (the prefix ends with the highest code point): then ``>=``.
    """
    head = prefix.rstrip(chr(0x10FFFF))
    if not head:
        return None
    return prefix, head[:-1] + chr(ord(head[-1]) + 1)


def list_jobs_query(where: HistoryFilter, cursor: Cursor | None, limit: int, p: Params) -> str:
    """The job list: ``where``, after ``cursor``, newest first, ``limit`` rows."""
    conditions = []
    if where.blueprint is not None:
        conditions.append(f"blueprint = {p(where.blueprint)}")
    statuses = where.statuses
    if len(statuses) == 1:
        conditions.append(f"status = {p(statuses[0])}")
    elif statuses:
        conditions.append(f"status IN ({', '.join(p(s) for s in statuses)})")
    if where.state is not None:
        conditions.append(f"state = {p(where.state)}")
    if where.client is not None:
        conditions.append(f"client = {p(where.client)}")
    if where.created_after is not None:
        conditions.append(f"created_at >= {p(float(where.created_after))}")
    if where.created_before is not None:
        conditions.append(f"created_at < {p(float(where.created_before))}")
    if where.id_prefix:
        bounds = prefix_range(where.id_prefix)
        if bounds is None:
            conditions.append(f"id >= {p(where.id_prefix)}")
        else:
            conditions.append(f"id >= {p(bounds[0])} AND id < {p(bounds[1])}")
    conditions += _search_conditions(where, p)
    if cursor is not None:
        conditions.append(f"(created_at, id) < ({p(float(cursor.created_at))}, {p(cursor.id)})")
    sql = f"SELECT {JOB_SELECT} FROM jobs"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return sql + f" ORDER BY created_at DESC, id DESC LIMIT {p(limit)}"


def _search_conditions(where: HistoryFilter, p: Params) -> list[str]:
    """The conditions of a search in what jobs hold: their error message, fields of their input."""
    conditions = [_data_condition(path, value, p) for path, value in where.data]
    if where.error:
        conditions.append(f"LOWER(error) LIKE {p('%' + like_escaped(where.error.lower()) + '%')} ESCAPE '\\'")
    return conditions


def like_escaped(text: str) -> str:
    """``text`` matched literally inside a LIKE pattern (``ESCAPE '\\'``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _data_condition(path: str, value: str, p: Params) -> str:
    """The job's ``initial_data`` (on its ``job_created`` line) has ``value`` at the dotted ``path``."""
    keys = ["initial_data", *path.split(".")]
    if p.style == "qmark":  # SQLite: a JSON path with quoted keys; ->> gives a string as it is, -> JSON
        json_path = "$" + "".join('."' + key.replace('"', '""') + '"' for key in keys)
        found = (
            f"CASE json_type(e.data, {p(json_path)}) WHEN 'text' THEN e.data ->> {p(json_path)} "
            f"ELSE e.data -> {p(json_path)} END"
        )
    else:  # PostgreSQL: a text[] path; #>> gives a string as it is, #> (as text) JSON
        key_path = p(keys)
        found = (
            f"CASE jsonb_typeof(e.data #> {key_path}::text[]) WHEN 'string' THEN e.data #>> {key_path}::text[] "
            f"ELSE (e.data #> {key_path}::text[])::text END"
        )
    return (
        f"EXISTS (SELECT 1 FROM events e WHERE e.job_id = jobs.id AND e.kind = 'job_created' AND {found} = {p(value)})"
    )


def timeline_query(job_id: str, after_seq: int, limit: int | None, p: Params) -> str:
    sql = f"SELECT {EVENT_SELECT} FROM events WHERE job_id = {p(job_id)} AND seq > {p(after_seq)} ORDER BY seq"
    return sql + (f" LIMIT {p(limit)}" if limit is not None else "")


def counts_query(blueprint: str | None, p: Params) -> str:
    where = f" WHERE blueprint = {p(blueprint)}" if blueprint is not None else ""
    return f"SELECT state, status, COUNT(*) FROM jobs{where} GROUP BY state, status"


def worker_outcomes_query(worker_id: str, limit: int, p: Params) -> str:
    # Spelled like the partial index's predicate, so both databases use it.
    return (
        f"SELECT job_id, at, data FROM events WHERE worker_id = {p(worker_id)} AND kind = '{RESULT_KIND}'"
        f" ORDER BY at DESC LIMIT {p(limit)}"
    )


#: Statuses after which a job goes on no more (the others are lost with an engine's memory).
_OVER = ("finished", "failed", "cancelled", "lost")


def lost_candidates_query(keep_feed: str, p: Params) -> str:
    """Jobs not over whose lines came from a memory feed other than ``keep_feed`` (see ``mark_lost``)."""
    over = ", ".join(p(s) for s in _OVER)
    return (
        f"SELECT id, status, state, last_seq, feed, error FROM jobs WHERE status NOT IN ({over})"
        f" AND feed LIKE {p(VOLATILE_FEED_PREFIX + '%')} AND feed <> {p(keep_feed)}"
    )


def mark_lost_sql(error: str, at: str, job_id: str) -> str:
    """One job marked lost (its placeholders given): it ran until the last thing history saw of it."""
    return (
        f"UPDATE jobs SET status = 'lost', error = {error}, finished_at = updated_at, updated_at = {at},"
        f" state_entered_at = NULL, last_seq = last_seq + 1 WHERE id = {job_id}"
    )


def save_graph_sql(blueprint: str, version: str, graph: str, at: str) -> str:
    return (
        f"INSERT INTO blueprint_graphs (blueprint, version, graph, saved_at) VALUES ({blueprint}, {version}, {graph},"
        f" {at}) ON CONFLICT (blueprint, version) DO NOTHING"
    )


def purge_candidates_query(cutoff_at: float, batch_size: int, p: Params) -> str:
    return f"SELECT id FROM jobs WHERE updated_at < {p(cutoff_at)} ORDER BY updated_at LIMIT {p(batch_size)}"


def upsert_jobs_sql(values: str) -> str:
    """``INSERT ... ON CONFLICT (id) DO UPDATE`` of every column; ``values`` is the source of rows."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in JOB_COLUMNS if c != "id")
    return f"INSERT INTO jobs ({JOB_SELECT}) {values} ON CONFLICT (id) DO UPDATE SET {updates}"
