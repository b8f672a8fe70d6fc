"""Records and script arguments as Redis stores them, and replies decoded back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

import orjson

from ...models import ENDED_STATUSES, Job, Task, WorkerRecord, named, tasks_waited_alone, wait_on_tasks
from ..base import asks_eligible
from . import keys

#: What redis-py's types say a reply holds (always bytes here: the client has decode_responses=False).
Raw: TypeAlias = bytes | str


def flag(value: bool) -> str:
    return "1" if value else "0"


def exact_score(value: float) -> str:
    """A float as Redis parses it back exactly (Lua would round it to 14 digits)."""
    return repr(float(value))


#: Job fields its record keeps in its key and lines, not in its document (see ``keys.JOB``): its id,
#: status and version, and those its ``counted`` line holds.
JOB_APART = frozenset(("id", "status", "version", "blueprint", "state", "client"))
#: Likewise, for a job that waits on tasks alone: its record lists them (see ``keys.JOB``).
JOB_APART_WAITING = JOB_APART | {"wait"}


def job_fields(job: Job, token: str) -> list[Any]:
    """The job as ``store_job`` in the scripts reads it (``JOB_ARGS`` values)."""
    counted = orjson.dumps([job.blueprint, str(job.status), job.state, job.client])
    # The order jobs ended in, in µs (only such jobs are ever forgotten): the stamp of the change that ended it.
    ended_at = str(int(job.updated_at * 1_000_000)) if job.status in ENDED_STATUSES else ""
    waits = waited_tasks(job.wait)
    doc = named(job, JOB_APART_WAITING if waits else JOB_APART)
    status = str(job.status)
    return [
        job.id,
        job.version,
        doc,
        token,
        status,
        job.client or "",
        counted,
        exact_score(job.created_at),
        ended_at,
        waits,
    ]


def waited_tasks(wait: dict[str, Any] | None) -> str:
    """The ids of the tasks a wait on tasks alone waits for, ',' between ('' for any other wait or none)."""
    return ",".join(tasks_waited_alone(wait) or ())


def head_version(head: bytes) -> int:
    """The version of a job's record from its first bytes (at least its first two lines; see ``keys.JOB``)."""
    return int(head.split(b"\n", 2)[1])


def split_job(record: bytes, job_id: str) -> tuple[int, bytes]:
    """The version and whole document of the record of the job ``job_id`` (see ``keys.JOB``)."""
    if record.startswith((_WHOLE, _ID_APART)):
        form, version, _, _, status, _, _, doc = record.split(b"\n", 7)
        if form == _WHOLE[:-1]:
            return int(version), doc
        return int(version), _with_id_status_version(job_id, status, int(version), doc)
    _, version, _, _, counted, tasks, waits, doc = record.split(b"\n", 7)
    head = _apart(job_id, int(version), counted)
    if waits:
        task_ids = tasks.decode().split(",")
        head["wait"] = wait_on_tasks(task_ids[len(task_ids) - int(waits) :])
    return int(version), _joined(orjson.dumps(head), doc)


_WHOLE = keys.JOB_FORMAT_WHOLE.encode() + b"\n"
_ID_APART = keys.JOB_FORMAT_ID_APART.encode() + b"\n"


def _apart(job_id: str, version: int, counted: bytes) -> dict[str, Any]:
    """The fields of a job that its record's key and lines hold (JOB_APART), by name."""
    blueprint, status, state, client = orjson.loads(counted)
    apart = {"id": job_id, "status": status, "version": version, "blueprint": blueprint, "state": state}
    return apart if client is None else apart | {"client": client}


def _with_id_status_version(job_id: str, status: bytes, version: int, doc: bytes) -> bytes:
    """The document of a record of ``keys.JOB_FORMAT_ID_APART`` with its id, status and version put back."""
    return _joined(b'{"id":%b,"status":"%b","version":%d}' % (orjson.dumps(job_id), status, version), doc)


def _joined(head: bytes, doc: bytes) -> bytes:
    """Two JSON objects' members as one object (``head``'s first)."""
    return head if doc == b"{}" else head[:-1] + b"," + doc[1:]


def task_fields(task: Task) -> list[Any]:
    """The task as ``store_task`` in the scripts reads it; the score puts higher priorities first.

    The take script reads the task's own ``timeout_s`` ('' for the default) and whether a worker's
    ``eligible`` must be asked about it, so that it can take most tasks without decoding them.
    """
    doc = named(task, TASK_APART)
    score = exact_score(0.0 - task.priority)
    return [
        task.id,
        task.job_id,
        task.type,
        str(task.status),
        task.worker_id or "",
        doc,
        score,
        exact_score(task.queued_at),
        exact_score(task.timeout_s) if task.timeout_s else "",
        flag(asks_eligible(task)),
    ]


#: Task fields its record keeps on lines of their own (or in its key), not in its document.
TASK_APART = frozenset(("id", "type", "status", "worker_id"))


def as_text(value: Raw) -> str:
    return value.decode() if isinstance(value, bytes) else value


def decode_job(doc: Raw) -> Job:
    job: Job = Job.from_dict(orjson.loads(doc))
    return job


def decode_worker(doc: Raw) -> WorkerRecord:
    record: WorkerRecord = WorkerRecord.from_dict(orjson.loads(doc))
    return record


def decode_task(stored: Mapping[Raw, Raw]) -> Task:
    """A task from its fields (as ``task_record`` or the scripts give them, or a hash of an older version
    held them): the stored document, with the fields kept apart and those changed since laid over it."""
    data = orjson.loads(stored[b"doc"])
    if task_id := stored.get(b"id"):
        data["id"] = as_text(task_id)
    data["type"] = as_text(stored[b"type"])
    data["status"] = as_text(stored[b"status"])
    worker_id = stored.get(b"worker_id")
    data["worker_id"] = as_text(worker_id) if worker_id else None
    for name, value in stored.items():
        if isinstance(name, bytes) and name.startswith(b"x:"):
            data[name[2:].decode()] = orjson.loads(value)
    task: Task = Task.from_dict(data)
    return task


#: The fields of a task's record between its format and its overlays (see ``keys.TASK``).
TASK_LINES = (b"status", b"worker_id", b"type", b"qkey", b"member", b"score", b"timeout_s", b"ask")


def task_record(record: bytes, task_id: str) -> dict[Raw, Raw]:
    """A task's record (see ``keys.TASK``) as the fields :func:`decode_task` reads (its queue position
    as the record has it: what the scripts derive from it is left out)."""
    _, *lines, overlays, doc = record.split(b"\n", len(TASK_LINES) + 2)
    stored: dict[Raw, Raw] = {name: value for name, value in zip(TASK_LINES, lines, strict=True) if value}
    parts = overlays.split(b"\t") if overlays else []
    stored |= {b"x:" + name: value for name, value in zip(parts[::2], parts[1::2], strict=True)}
    stored[b"doc"], stored[b"id"] = doc, task_id.encode()
    return stored


def paired(flat: list[Raw]) -> dict[Raw, Raw]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def decode_counts(stored: Mapping[Raw, Raw]) -> dict[str, int]:
    return {as_text(name): int(n) for name, n in stored.items() if int(n) > 0}


def stream_entries(entries: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Stream entries as (id, fields), whether the reply nests them once or twice (RESP2/RESP3)."""
    if entries and isinstance(entries[0], list) and entries[0] and isinstance(entries[0][0], list | tuple):
        return [entry for group in entries for entry in group]
    return list(entries)


def as_mapping(reply: Any) -> dict[Raw, Raw]:
    """A hash as read (HGETALL): a flat list of fields and values (RESP2), or a map (RESP3)."""
    return reply if isinstance(reply, dict) else paired(reply)


def scored(reply: Any) -> list[tuple[bytes, float]]:
    """Members and scores of a sorted set as read WITHSCORES: flat (RESP2) or pairs (RESP3)."""
    if reply and isinstance(reply[0], list):
        return [(member, float(score)) for member, score in reply]
    return [(member, float(score)) for member, score in zip(reply[::2], reply[1::2], strict=True)]
