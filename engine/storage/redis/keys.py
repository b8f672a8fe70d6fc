"""Every Redis key, prefix and channel the engine uses, in one place.

Each name below is appended to a namespace (``"avtomatika:"`` by default), so several engines or test
runs can share one Redis without seeing each other. With Redis Cluster, give a namespace with a hash
tag, e.g. ``"{avtomatika}"``: every key then lands in one slot, which the Lua scripts need (they build
some key names from what they read, e.g. a task's worker's load set).

Records are orjson documents; times are Unix seconds (float) unless a name says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...timers import TimerKind

DEFAULT_NAMESPACE = "avtomatika"

# -- jobs -----------------------------------------------------------------------------------------
#: + job id -> the job's record, one string of lines (``encoding.split_job`` reads it): JOB_FORMAT, its
#: version, the size of its fan-out round ('' for none; near the start, so that a branch result reads it
#: without the rest), ``commit`` (token of the last commit, so a retried commit is recognised),
#: ``counted`` (the JOB_COUNTS field it is counted under: orjson ``[blueprint, status, state, client]``,
#: whence its status is read), the ids of its tasks (',' between: its tasks are deleted with it), ``waits`` (how many of
#: those, the last listed, it waits on when its wait is on tasks alone: '' for any other wait or none),
#: then its document (the Job's fields not at their default, ``models.named``, but for those its key and
#: lines hold: its id, status and version, its blueprint, state and client, and such a wait;
#: ``encoding.split_job`` and the scripts' ``whole_doc`` put them back). One string takes ~360 bytes of
#: redis-server's memory for a job waiting for a worker where a hash took ~1,060: the hash's document
#: was longer than ``hash-max-listpack-value`` (64 bytes), so the hash was a dict of seven fields with
#: two allocations each.
#: Records of earlier formats are read as such until stored again: JOB_FORMAT_ID_APART (versions before
#: 2026-12-08) has its status on a line before ``counted``, no ``waits`` line, and its document keeps all
#: but the id, status and version;
#: JOB_FORMAT_WHOLE (before 2026-12-07's second Redis pass) has its document whole. Versions before
#: 2026-12-07 kept a hash: ``doc``, ``version``, ``commit``, ``status``, ``client``, ``counted``,
#: ``fan_in`` and a field JOB_TASK + task id per task; read as such until stored again (then written as a
#: record). Versions before 2026-12 also kept ``seq`` (creation order, from an INCR of ``jobs:seq``),
#: ``blueprint`` and ``state`` (listed by them too): such a job is listed anew, by ``created_at``, when
#: next stored.
JOB = "job:"
#: The first line of a job's record (JOB): its format.
JOB_FORMAT = "j3"
#: The format of a record with a status line, without ``waits``, whose document leaves out only the id,
#: status and version (see JOB).
JOB_FORMAT_ID_APART = "j2"
#: The format of a record whose document is whole (see JOB): read as such until stored again.
JOB_FORMAT_WHOLE = "j1"
#: A field (+ task id) per task of the job in a JOB hash of a version before 2026-12-07.
JOB_TASK = "t:"
#: + job id -> set of the ids of its tasks: written by versions before JOB_TASK, still read (and
#: deleted) when such a job is forgotten.
JOB_TASKS = "job_tasks:"
#: zset job id -> created_at of every job, written by versions before 2026-12-07; its entries go as their
#: jobs are forgotten. Every job is in one list (JOBS_BY): listing every job merges those.
JOBS_ALL = "jobs:all"
#: + "status:<status>" (jobs without a client) or "status:<status>:client:<client>" -> zset job id ->
#: created_at: every job is in the one list of its status and client, newest = highest score (as history
#: lists them). Which clients have jobs of a status, JOB_COUNTS says: listing by status merges their
#: lists, listing by client merges its lists by status. A list per status and one per client cost a job
#: two sorted-set entries (~145 bytes each).
#: Versions before 2026-12-08 (records of a format before JOB_FORMAT) listed a job by status alone, in
#: "status:<status>", and by client in "client:<client>", until it is next stored (a job listed by a
#: version before 2026-12 has its creation sequence as its score, a smaller one; those versions kept
#: lists by blueprint and by state too: see JOB).
JOBS_BY = "jobs:by:"
#: hash orjson ``[blueprint, status, state, client]`` -> number of jobs; fields that fall to 0 stay (see
#: ``decrement`` in :mod:`.scripts`), read as absent.
JOB_COUNTS = "jobs:counts"
#: zset job id -> when it ended for good (the ``updated_at`` of the commit that ended it, in µs; finished,
#: failed or cancelled: never a quarantined or waiting job); the oldest are forgotten past a maximum.
JOBS_TERMINAL = "jobs:terminal"

# -- the queue of jobs to step --------------------------------------------------------------------
#: Stream of ``{job: <id>}`` entries; an entry is acknowledged once its step committed, and deleted by a
#: trim of the entries acknowledged before the oldest pending one (every ``runnable.TRIM_EVERY``
#: acknowledgements of a process).
RUNNABLE = "runnable"
#: Consumer group of RUNNABLE shared by all engine processes (a group name, not a key: no namespace).
RUNNABLE_GROUP = "engines"

#: + job id -> the holder of the job's step lease (a string), with an expiry (SET NX PX): one process at
#: a time runs the job's handlers. Renewed while held, deleted when the step ends.
STEP_LEASE = "step_lease:"

# -- tasks ----------------------------------------------------------------------------------------
#: + task id -> the task's record, one string of lines (``encoding.task_record`` reads it): TASK_FORMAT,
#: then ``status`` and ``worker_id`` (plain strings), ``type``, while queued ``qkey``/``member``/``score``
#: (where its queue entry is; ``member``: the sequence its queue member starts with),
#: ``timeout_s`` (its own, if any) and ``ask`` ('1' if a worker's
#: eligibility must be checked before it is taken: it has requirements or max_cost), each '' for none;
#: then its overlays (orjson values changed since: taken_at, progress...; name and value of each, a tab
#: between all), then ``doc`` (orjson Task as stored). One string takes ~300 bytes of redis-server's
#: memory for a queued task where a hash took ~840 (its document is longer than
#: ``hash-max-listpack-value``: see JOB).
#: Versions before 2026-12-07 kept a hash of those fields (an overlay as ``x:<field>``), read as such
#: until written again; versions before 2026-12 also kept ``job_id`` in it, left unread.
TASK = "task:"
#: The first line of a task's record (TASK): its format.
TASK_FORMAT = "t1"
#: INCR counter: queue order. A queue member starts with it, written so that members sort as their
#: sequences do (equal priorities stay FIFO): the number of its base-62 digits (0-9, A-Z, a-z), then
#: those (7 characters up to 56 billion); versions before 2026-12-08 wrote 16 decimal digits (which sort
#: before them).
TASK_SEQUENCE = "tasks:seq"
#: + task type -> zset of queued tasks for anyone: score = -priority, member = "<sequence>:<task id>"
#: (see TASK_SEQUENCE).
QUEUE = "queue:"
#: + worker id -> zset like QUEUE of the queued tasks given to that worker only.
INBOX = "inbox:"
#: + task type -> zset task id -> its queued_at, of the tasks of that type waiting in some worker's
#: INBOX: where an idle worker looks for tasks left longer than ``steal_after_s`` by a worker that
#: stopped asking; and with QUEUE, how many tasks of that type are queued (the ZCARD of both).
INBOXED = "tasks:inboxed:"
#: set of the task types queued (those whose queued tasks are counted): a commit queuing tasks adds
#: their types when its process has not added them in the last ``TASK_TYPES_REFRESH_S`` (so a set
#: lost with Redis's data is whole again by then).
TASK_TYPES = "tasks:types"
TASK_TYPES_REFRESH_S = 60.0
#: hash task type -> number of queued tasks, kept by versions before 2026-12-08 (the number is the
#: ZCARD of QUEUE and INBOXED since): its fields still name task types queued.
QUEUED_COUNTS = "tasks:queued"
#: Pub/sub channel: ``t:<task type>`` or ``w:<worker id>`` is published when a task is queued.
TASK_WAKE = "tasks:wake"
#: Pub/sub channel carrying the engine's events (orjson) to every process sharing this Redis.
EVENTS = "events"
#: Pub/sub channel carrying commands for workers (``cancel_task``, orjson) to every engine process,
#: which hands them to the worker's WebSocket if it is open there.
WORKER_COMMANDS = "workers:commands"
#: + worker id -> set of the ids of tasks given to that worker and not answered.
LOAD = "load:"
#: hash worker id -> size of its LOAD set (a field at 0 stays until its worker expires).
LOAD_COUNTS = "load:counts"
#: Prefix of a taken task's timeout timer id (a TIMERS member, not a key); see avtomatika.timers.
TIMEOUT_TIMER = TimerKind.TIMEOUT.of("")
#: Prefix of the timer of a task whose worker expired while running it; see avtomatika.timers.
LOST_TIMER = TimerKind.LOST.of("")

# -- fan-in, timers, workers ----------------------------------------------------------------------
#: + job id -> hash task id -> orjson branch result, of the job's current fan-out round (whose size is
#: the fan-in size in the job's record, see JOB).
BRANCHES = "branches:"
#: zset timer id -> due time; a claimed timer is moved to the end of its claim's lease.
TIMERS = "timers"
#: + worker id -> orjson WorkerRecord.
WORKER = "worker:"
#: zset worker id -> registration order (list order).
WORKERS = "workers"
#: INCR counter for WORKERS scores.
WORKER_SEQUENCE = "workers:seq"
#: zset worker id -> expires_at.
WORKER_EXPIRY = "workers:expiry"

# -- breakpoints ----------------------------------------------------------------------------------
#: hash breakpoint id -> orjson Breakpoint (see avtomatika.runtime.breakpoints): every engine holds jobs at them.
BREAKPOINTS = "breakpoints"

# -- bulk actions -----------------------------------------------------------------------------------
#: + bulk action id -> orjson BulkAction (see avtomatika.runtime.bulk), kept BULK_TTL_S after its last change.
BULK = "bulk:"
#: + bulk action id -> list of the ids of its jobs, in order; same expiry.
BULK_JOBS = "bulk_jobs:"
#: zset bulk action id -> created_at: every bulk action, for listing (members whose record expired
#: are dropped as they are listed).
BULKS = "bulks"
#: How long a bulk action's record outlives its last change.
BULK_TTL_S = 7 * 24 * 3600

# -- the history feed -----------------------------------------------------------------------------
#: Stream of ``{e: <orjson list of events>}`` entries, one per commit (and per task taken), in the order
#: they were applied; history's writers read it and trim what every history database has written.
FEED = "history:feed"
#: Most entries the feed keeps (history down for long): past it the oldest are trimmed (XADD MAXLEN ~).
FEED_MAX_ENTRIES = 1_000_000
#: A random id naming this Redis data set's feed (SET NX at connect): history keeps its position under it.
FEED_ID = "history:feed_id"
#: hash history database id -> "<last entry id written> <unix time>": what each reader has written.
FEED_READERS = "history:feed_readers"
#: + history database id -> the engine process writing the feed into it (SET NX PX), one at a time.
FEED_LEASE = "history:feed_lease:"

# -- replies of takes -----------------------------------------------------------------------------
#: + call token -> the id of the task a take script gave, so a call retried after a lost reply gets
#: the same task instead of losing it. Kept REPLY_TTL_S seconds; read only by a call sent again (a
#: first send's token is new).
REPLY = "reply:"
REPLY_TTL_S = 60


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one namespace.

    Args:
        namespace: Prepended to every key with a ``:``; empty for none.
    """

    namespace: str = DEFAULT_NAMESPACE

    @property
    def prefix(self) -> str:
        """What every key starts with (the Lua scripts build keys from it)."""
        return f"{self.namespace}:" if self.namespace else ""

    def key(self, name: str, suffix: str = "") -> str:
        """The key ``name`` (a constant of this module) followed by ``suffix``."""
        return f"{self.prefix}{name}{suffix}"

    def job(self, job_id: str) -> str:
        return self.key(JOB, job_id)

    def jobs_of(self, status: str, client: str | None = None) -> str:
        """The list of the jobs of ``status`` and ``client`` (see JOBS_BY)."""
        if not client:
            return self.key(JOBS_BY, f"status:{status}")
        return self.key(JOBS_BY, f"status:{status}:client:{client}")

    def jobs_by_client_before(self, client: str) -> str:
        """The list by client of the jobs versions before 2026-12-08 stored (see JOBS_BY)."""
        return self.key(JOBS_BY, f"client:{client}")

    def task(self, task_id: str) -> str:
        return self.key(TASK, task_id)

    def queue(self, task_type: str) -> str:
        return self.key(QUEUE, task_type)

    def inbox(self, worker_id: str) -> str:
        return self.key(INBOX, worker_id)

    def step_lease(self, job_id: str) -> str:
        return self.key(STEP_LEASE, job_id)

    def branches(self, job_id: str) -> str:
        return self.key(BRANCHES, job_id)

    def worker(self, worker_id: str) -> str:
        return self.key(WORKER, worker_id)
