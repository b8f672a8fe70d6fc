"""Versioned schema migrations, one list per backend.

A migration is a version number, a name and its statements. ``schema_version`` records which ran;
:func:`pending` gives those still to run, each applied in its own transaction with its row in
``schema_version``. Statements are idempotent too (``IF NOT EXISTS``), so a half-applied migration
of a database that does not do DDL in transactions (none of ours) could simply run again.

Never edit a released migration: append a new one. Indexes are chosen for the studio's queries at
100k jobs / 1M events (``benchmarks/history_list.py`` measures them):

* the job list, newest first, by keyset ``(created_at, id)``: unfiltered, or by blueprint, status,
  blueprint + status, blueprint + state; a prefix of the id uses the primary key;
* counts per blueprint by state and status: the ``(blueprint, state, status)`` index covers them;
* a timeline: the ``events`` primary key ``(job_id, seq)``;
* a worker's recent results: a partial index on ``task_result`` lines;
* retention: ``jobs(updated_at)``.

Migration 3 adds ``jobs.feed`` (which live storage a job's lines came from: a job whose storage was
an engine's memory is *lost* once that engine stops, see ``HistoryStorage.mark_lost``) and
``blueprint_graphs`` (each blueprint version's graph, so a job's page draws the graph it ran on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: applied once, in order, in one transaction."""

    version: int
    name: str
    statements: tuple[str, ...]


SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)"""

_JOB_INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_blueprint_created ON jobs (blueprint, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_status_created ON jobs (status, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_blueprint_status_created ON jobs (blueprint, status, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_blueprint_state_created ON jobs (blueprint, state, created_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_blueprint_state_status ON jobs (blueprint, state, status)",
    "CREATE INDEX IF NOT EXISTS jobs_updated ON jobs (updated_at)",
    "CREATE INDEX IF NOT EXISTS events_worker_results ON events (worker_id, at)"
    " WHERE kind = 'task_result' AND worker_id IS NOT NULL",
)

#: Where history stands in each live storage's feed, and the database's own id (see HistoryWriter).
_FEED_TABLES = (
    "CREATE TABLE IF NOT EXISTS feed_positions (feed TEXT PRIMARY KEY, position TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def _schema(real: str, key: str, json: str, add_column: str) -> tuple[Migration, ...]:
    """The migrations, spelled in a backend's types: its float, its id column's text, its JSON."""
    # Long: the statements of every migration, written once for both backends.
    return (
        Migration(
            1,
            "jobs and events",
            (
                f"""
            CREATE TABLE IF NOT EXISTS jobs (
                id {key} PRIMARY KEY,
                blueprint TEXT NOT NULL DEFAULT '',
                blueprint_version TEXT,
                status TEXT NOT NULL DEFAULT '',
                state TEXT NOT NULL DEFAULT '',
                client TEXT,
                parent_job_id TEXT,
                created_at {real} NOT NULL,
                updated_at {real} NOT NULL,
                finished_at {real},
                state_entered_at {real},
                error TEXT,
                retry_count INTEGER NOT NULL DEFAULT 0,
                last_seq INTEGER NOT NULL DEFAULT 0
            )""",
                f"""
            CREATE TABLE IF NOT EXISTS events (
                job_id {key} NOT NULL,
                seq INTEGER NOT NULL,
                at {real} NOT NULL,
                kind TEXT NOT NULL,
                state TEXT,
                status TEXT,
                worker_id TEXT,
                duration_ms {real},
                data {json} NOT NULL DEFAULT '{{}}',
                PRIMARY KEY (job_id, seq)
            )""",
                *_JOB_INDEXES,
            ),
        ),
        Migration(2, "feed positions", _FEED_TABLES),
        Migration(
            3,
            "the feed each job came from; blueprint graphs by version",
            (
                f"ALTER TABLE jobs {add_column} feed TEXT",
                f"""
            CREATE TABLE IF NOT EXISTS blueprint_graphs (
                blueprint TEXT NOT NULL,
                version TEXT NOT NULL,
                graph TEXT NOT NULL,
                saved_at {real} NOT NULL,
                PRIMARY KEY (blueprint, version)
            )""",
            ),
        ),
    )


SQLITE = _schema(real="REAL", key="TEXT", json="TEXT", add_column="ADD COLUMN")
#: COLLATE "C": byte order, so an id prefix is a range of the primary key in any locale.
POSTGRES = _schema(real="DOUBLE PRECISION", key='TEXT COLLATE "C"', json="JSONB", add_column="ADD COLUMN IF NOT EXISTS")


def pending(migrations: Sequence[Migration], applied: set[int]) -> list[Migration]:
    """The migrations not yet applied, in version order; checks the list is well formed."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise ValueError(f"migration versions must be distinct, positive and increasing: {versions}")
    return [m for m in migrations if m.version not in applied]


def latest(migrations: Sequence[Migration]) -> int:
    """The version a fully migrated database has."""
    return migrations[-1].version if migrations else 0
