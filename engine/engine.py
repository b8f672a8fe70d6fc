"""The engine: holds blueprints, steps jobs, serves the HTTP API, and is what every face calls.

The HTTP API, the studio and the notebook widgets all call the methods of
:class:`OrchestratorEngine`; none of them touches storage directly.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Unpack

from .access import AccessRegistry
from .blueprint import StateMachineBlueprint
from .config import Config
from .errors import BlueprintInvalid, ConfigError
from .events import EventBus
from .models import Breakpoint, Job, Task, WorkerRecord
from .observe.metrics import Metrics
from .observe.telemetry import Tracer
from .reads import Line, Reader
from .reads.reader import LiveJobQuery
from .runtime.bulk import BulkActions
from .runtime.commits import Committer
from .runtime.operations import NewJobOptions, Operations
from .runtime.results import ResultProcessor
from .runtime.runner import JobRunner
from .runtime.scheduler import Scheduler
from .runtime.shared import Runtime
from .runtime.watchers import JobWatcher
from .runtime.workers import Workers
from .server import crashpoints
from .server.channels import WorkerChannels
from .server.lifecycle import Lifecycle
from .storage import MemoryStorage, Storage

if TYPE_CHECKING:
    from aiohttp import web

    from .history import HistoryStorage, HistoryWriter

logger = logging.getLogger(__name__)


class OrchestratorEngine:
    """Runs blueprints' jobs and serves the client, worker and public HTTP API.

    Args:
        storage: Live state; ``MemoryStorage()`` when omitted.
        config: Settings; ``Config()`` (the environment) when omitted.
    """

    def __init__(
        self, storage: Storage | None = None, config: Config | None = None, *, history: HistoryStorage | None = None
    ) -> None:
        self.config = config or Config()
        storage = storage if storage is not None else self._storage_from_config()
        self.storage = crashpoints.wrap(storage, crashpoints.STORAGE_WRITES)  # itself unless a test arms it
        self.history = history
        self.history_writer: HistoryWriter | None = None
        self.access = AccessRegistry(self.config)
        self.blueprints: dict[str, StateMachineBlueprint] = {}
        self.events = EventBus()
        #: Clients waiting for a job to end or change (GET jobs/{id}?wait_s=), woken by its events.
        self.watcher = JobWatcher(self.events)
        self.channels = WorkerChannels()
        #: What the runner, results, operations and scheduler share (they do not see the engine).
        self.runtime = Runtime(
            self.storage, Committer(self.storage, self.events), self.config, self.blueprints, self.access, self.channels
        )
        self.runner = JobRunner(self.runtime)
        self.results = ResultProcessor(self.runtime)
        self.operations = Operations(self.runtime)
        #: What the API, the studio and the notebook read jobs, timelines, counts and workers through.
        self.reads = Reader(self)
        self.bulk = BulkActions(self.runtime, self.operations, self.reads.rerun_origin)
        self.workers = Workers(self.runtime)
        self.scheduler = Scheduler(self.runtime, self.results, self.operations, self.bulk)
        self.app: web.Application | None = None
        self.port: int | None = None
        self.started_at: float | None = None
        #: Whether the engine's own coroutines step runnable jobs (False: a debugger steps them).
        self.steps_jobs = True
        #: Prometheus metrics (GET /_public/metrics); counts this process's events from now on.
        self.metrics = Metrics(self)
        #: Starts and stops this engine's tasks, history and HTTP site (the process side).
        self.lifecycle = Lifecycle(self, owns_history=history is None)

    @property
    def tracer(self) -> Tracer:
        """Tracing; a no-op until start() reads the OTEL_* environment (or set one before start)."""
        return self.runtime.tracer

    @tracer.setter
    def tracer(self, tracer: Tracer) -> None:
        self.runtime.tracer = tracer

    @property
    def committer(self) -> Committer:
        """Applies every change to a job (one atomic storage change) and publishes its events."""
        return self.runtime.committer

    def _storage_from_config(self) -> Storage:
        """Redis when REDIS_URL or REDIS_HOST is set, else memory."""
        url = self.config.redis_url
        if url is None:
            return MemoryStorage()
        try:
            from .storage.redis import RedisStorage
        except ImportError as exc:
            raise ConfigError(
                f'REDIS_URL/REDIS_HOST is set but the Redis client is missing ({exc}): pip install "avtomatika[redis]"'
            ) from None
        return RedisStorage(url=url)

    def __repr__(self) -> str:
        return f"OrchestratorEngine(storage={type(self.storage).__name__}, blueprints={list(self.blueprints)})"

    # -- blueprints ------------------------------------------------------------------------------
    def register_blueprint(self, blueprint: StateMachineBlueprint) -> None:
        """Validate ``blueprint`` and serve it; raises :class:`BlueprintInvalid` listing every error."""
        for warning in blueprint.check():
            logger.warning("blueprint %s: %s", blueprint.name, warning)
        existing = self.blueprints.get(blueprint.name)
        if existing is not None and existing is not blueprint:
            raise BlueprintInvalid(blueprint.name, ["a blueprint with this name is already registered"])
        clash = next(
            (
                b
                for b in self.blueprints.values()
                if b is not blueprint
                and (b.api_version, b.api_endpoint) == (blueprint.api_version, blueprint.api_endpoint)
            ),
            None,
        )
        if clash is not None:
            raise BlueprintInvalid(
                blueprint.name, [f"its endpoint {blueprint.api_endpoint} is already used by '{clash.name}'"]
            )
        self.blueprints[blueprint.name] = blueprint
        if self.app is not None:
            logger.warning("blueprint %s registered after start: its endpoint is not served", blueprint.name)

    # -- lifecycle (server/lifecycle.py) -----------------------------------------------------------
    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self.lifecycle.running

    async def start(self, host: str | None = None, port: int | None = None, *, http: bool = True) -> None:
        """Start stepping jobs and, with ``http``, serve the API; for use inside a running loop.

        With ``steps_jobs`` set to False beforehand, no job moves unless someone steps it (the
        notebook's step debugger does); timers, workers and the API work as usual.
        """
        await self.lifecycle.start(host, port, http=http)

    async def stop(self) -> None:
        """Stop serving and stepping; waits for background work to end."""
        await self.lifecycle.stop()

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C or SIGTERM). Blocking.

        Called from inside a running event loop (as in ``asyncio.run(main())``), the engine runs
        in a thread of its own with its own loop, and this call still blocks until it stops.
        """
        self.lifecycle.run()

    # -- jobs ------------------------------------------------------------------------------------
    async def create_job(
        self, blueprint_name: str, initial_data: dict[str, Any] | None = None, **options: Unpack[NewJobOptions]
    ) -> Job:
        """Create a job at its blueprint's start state and queue it to run.

        ``client`` owns the job (it alone sees it through the client API); ``actor`` is who asked,
        when not the client itself (an operator in the studio), and is recorded in history;
        ``parent_job_id``, ``job_id`` and ``tracing_context`` as :class:`NewJobOptions` says.
        """
        return await self.operations.create(blueprint_name, initial_data, **options)

    async def get_job(self, job_id: str) -> Job | None:
        return await self.reads.job(job_id)

    async def require_job(self, job_id: str, client: str | None = None) -> Job:
        """The job, or JobNotFound, also when it belongs to another client than ``client``."""
        return await self.reads.require(job_id, client)

    async def job_history(self, job_id: str, client: str | None = None, *, wait: bool = True) -> list[Line]:
        """The job's timeline from history; JobNotFound for an unknown job, or another client's."""
        return await self.reads.job_history(job_id, client, wait=wait)

    async def history_lag(self) -> int:
        """Wait (boundedly) for history to write what happened until now; how many events it has not."""
        return await self.reads.history_lag()

    async def list_jobs(self, **query: Unpack[LiveJobQuery]) -> list[Job]:
        """Live jobs by ``status``, ``blueprint``, ``state`` and ``client``; ``limit`` (50) from ``offset``."""
        return await self.reads.list_jobs(**query)

    async def current_tasks(self, job: Job, limit: int | None = None) -> list[Task]:
        """The tasks the job is waiting on (or holds, when quarantined); the first ``limit`` of them."""
        return await self.reads.current_tasks(job, limit)

    async def cancel_job(self, job_id: str, actor: str = "operator") -> Job:
        return await self.operations.cancel(job_id, actor)

    async def retry_job(self, job_id: str, actor: str = "operator", from_state: str | None = None) -> Job:
        return await self.operations.retry(job_id, actor, from_state)

    async def release_job(self, job_id: str, actor: str = "operator", params: dict[str, Any] | None = None) -> Job:
        return await self.operations.release(job_id, actor, params)

    async def fail_job(self, job_id: str, actor: str = "operator", reason: str | None = None) -> Job:
        return await self.operations.fail(job_id, actor, reason)

    async def decide(self, job_id: str, decision: str, actor: str = "webhook") -> Job:
        return await self.operations.decide(job_id, decision, actor)

    async def set_breakpoint(
        self, blueprint: str | None, state: str, *, job_id: str | None = None, actor: str = "operator"
    ) -> Breakpoint:
        """Hold the job ``job_id``, or every new job of ``blueprint``, before ``state``'s handler runs
        (see :mod:`avtomatika.runtime.breakpoints`)."""
        return await self.operations.set_breakpoint(blueprint, state, job_id=job_id, actor=actor)

    async def remove_breakpoint(self, breakpoint_id: str, actor: str = "operator") -> list[Job]:
        """Remove a breakpoint; the jobs it held, continued."""
        return await self.operations.remove_breakpoint(breakpoint_id, actor)

    async def breakpoints(self) -> list[Breakpoint]:
        return await self.storage.breakpoints()

    async def continue_job(
        self,
        job_id: str,
        actor: str = "operator",
        *,
        initial_data: dict[str, Any] | None = None,
        state_history: dict[str, Any] | None = None,
        step: bool = False,
    ) -> Job:
        """Continue a held job (its data replaced by what is given); ``step``: hold it at its next state."""
        return await self.operations.continue_job(
            job_id, actor, initial_data=initial_data, state_history=state_history, step=step
        )

    async def rerun(
        self,
        job_id: str,
        state: str | None = None,
        *,
        visit: int | None = None,
        initial_data: dict[str, Any] | None = None,
        state_history: dict[str, Any] | None = None,
        client: str | None = None,
        actor: str = "operator",
    ) -> Job:
        """Start a new job at ``state`` (default: the start state) of the ended job ``job_id``, with the
        data it had there (its ``visit``-th visit, default the last), replaced by what is given
        (see :mod:`avtomatika.runtime.rerun`). ``client``: only a job of that client (JobNotFound otherwise)."""
        origin = await self.reads.rerun_origin(job_id, state, visit, client)
        return await self.operations.rerun(origin, actor, initial_data=initial_data, state_history=state_history)

    async def dashboard(self) -> dict[str, Any]:
        return await self.reads.dashboard()

    # -- workers (runtime/workers.py, runtime/results.py) ------------------------------------------
    async def register_worker(self, info: dict[str, Any]) -> WorkerRecord:
        return await self.workers.register(info)

    async def heartbeat(self, worker_id: str, changes: dict[str, Any]) -> WorkerRecord:
        return await self.workers.heartbeat(worker_id, changes)

    async def list_workers(self) -> list[WorkerRecord]:
        return await self.reads.list_workers()

    async def next_task(self, worker_id: str, timeout_s: float | None = None) -> Task | None:
        """Long poll: the worker's next task, or None after ``timeout_s``."""
        return await self.workers.next_task(worker_id, timeout_s)

    async def give_back(self, task: Task) -> None:
        """Queue a task taken by a worker that never received it (its long poll hung up)."""
        await self.workers.give_back(task)

    async def submit_result(self, job_id: str, task_id: str, worker_id: str, result: dict[str, Any]) -> str:
        return await self.results.submit(job_id, task_id, worker_id, result)

    async def record_progress(
        self, worker_id: str | None, job_id: str, task_id: str, progress: float | None, message: str | None
    ) -> None:
        await self.workers.record_progress(worker_id, job_id, task_id, progress, message)
