"""The engine: holds blueprints, steps jobs, serves the HTTP API, and is what every face calls.

The HTTP API, the studio and the notebook widgets all call the methods of
:class:`OrchestratorEngine`; none of them touches storage directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import loops, takeover
from .blueprint import StateMachineBlueprint
from .clients import AccessRegistry
from .config import Config
from .dispatch import WorkerChooser, meets_requirements
from .errors import (
    BlueprintInvalid,
    ConfigError,
    InvalidOperation,
    JobNotFound,
    UnknownBlueprint,
    VersionConflict,
    WorkerNotFound,
)
from .events import Event, EventBus, EventKind
from .logs import configure_logging
from .metrics import Metrics
from .models import TERMINAL_STATUSES, Job, JobStatus, Task, TaskStatus, WorkerRecord, new_id, now
from .operations import Operations
from .outcomes import Outcome
from .results import ResultProcessor
from .runner import JobRunner
from .scheduler import Scheduler
from .storage import Commit, JobFilter, MemoryStorage, Storage
from .storage.base import task_timeout_s
from .telemetry import Tracer
from .workers import WorkerChannels

if TYPE_CHECKING:
    from .history import HistoryFilter, HistoryStorage, HistoryWriter, JobRow, TimelineEntry

logger = logging.getLogger(__name__)

#: How many times a change is recomputed when the job changed under it before giving up.
MAX_CONFLICT_RETRIES = 50


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
        self.storage = storage if storage is not None else self._storage_from_config()
        self.history = history
        self.history_writer: HistoryWriter | None = None
        self._owns_history = history is None
        self.access = AccessRegistry(self.config)
        self.blueprints: dict[str, StateMachineBlueprint] = {}
        self.events = EventBus()
        self.channels = WorkerChannels()
        self.runner = JobRunner(self)
        self.results = ResultProcessor(self)
        self.operations = Operations(self)
        self.scheduler = Scheduler(self)
        self.chooser = WorkerChooser()
        self.app: web.Application | None = None
        self.port: int | None = None
        self._site_runner: web.AppRunner | None = None
        self._background: list[asyncio.Task[None]] = []
        self._workers_cache: tuple[float, list[WorkerRecord]] = (0.0, [])
        self.started_at: float | None = None
        #: Whether the engine's own coroutines step runnable jobs (False: a debugger steps them).
        self.steps_jobs = True
        #: Prometheus metrics (GET /_public/metrics); counts this process's events from now on.
        self.metrics = Metrics(self)
        #: Tracing; a no-op until start() reads the OTEL_* environment (or set one before start).
        self.tracer = Tracer()

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

    def blueprint_of(self, job: Job) -> StateMachineBlueprint:
        blueprint = self.blueprints.get(job.blueprint)
        if blueprint is None:
            raise UnknownBlueprint(job.blueprint)
        return blueprint

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return bool(self._background)

    async def start(self, host: str | None = None, port: int | None = None, *, http: bool = True) -> None:
        """Start stepping jobs and, with ``http``, serve the API; for use inside a running loop.

        With ``steps_jobs`` set to False beforehand, no job moves unless someone steps it (the
        notebook's step debugger does, with ``runner.run_handler`` and ``apply``); timers, workers and
        the API work as usual.
        """
        if self._background:
            raise RuntimeError("the engine is already started")
        configure_logging(self.config)
        if not self.tracer.enabled:
            self.tracer = Tracer.from_env()
        await self.storage.connect()
        await self._open_history()
        if self.access.clients_open:
            logger.warning("no client tokens configured (CLIENT_TOKEN / CLIENTS_CONFIG_PATH): the client API is open")
        if self.access.workers_open:
            logger.warning(
                "no worker tokens configured (GLOBAL_WORKER_TOKEN / WORKERS_CONFIG_PATH): the worker API is open"
            )
        self.started_at = now()
        loop = asyncio.get_running_loop()
        consumers = [
            loop.create_task(self.runner.consume(), name=f"avtomatika-step-{i}")
            for i in range(self.config.EXECUTOR_CONCURRENCY if self.steps_jobs else 0)
        ]
        self._background = [*consumers, loop.create_task(self.scheduler.run(), name="avtomatika-scheduler")]
        self.metrics.start()
        if self.config.HISTORY_RETENTION_DAYS > 0 and self.history is not None:
            from .history import retention_loop

            retention = retention_loop(self.history, self.config.HISTORY_RETENTION_DAYS)
            self._background.append(loop.create_task(retention, name="avtomatika-history-retention"))
        transport = self.storage.event_transport()
        if transport is not None:
            self._background.append(loop.create_task(self.events.run_transport(transport), name="avtomatika-events"))
        commands = self.storage.worker_command_transport()
        if commands is not None:  # cancel_task reaches a worker whose WebSocket is open on another engine
            self._background.append(loop.create_task(self.channels.run_relay(commands), name="avtomatika-commands"))
        if http:
            await self._serve(host or self.config.API_HOST, self.config.API_PORT if port is None else port)

    async def _serve(self, host: str, port: int) -> None:
        from .api.app import create_app

        self.app = create_app(self)
        if self.config.STUDIO_ENABLED:
            self._mount_studio(self.app)
        self._site_runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._site_runner.setup()
        site = web.TCPSite(self._site_runner, host, port)
        await takeover.take_over(self, port)  # an earlier engine of this process on this port (a notebook)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        takeover.serving(self, self.port)
        logger.info("avtomatika engine serving on http://%s:%s", host, self.port)

    async def _open_history(self) -> None:
        """Record every event of this process in history (SQLite in a temporary file unless configured)."""
        from .history import HistoryWriter, open_history

        if self.history is None:
            self.history = await open_history(self.config.HISTORY_DATABASE_URI)
        else:
            await self.history.open()
        # remote=False inside the writer: each engine process writes its own events exactly once.
        self.history_writer = writer = HistoryWriter(self.history, self.events)
        self.metrics.watch_drops("history", lambda: writer.dropped)
        await self.history_writer.start()

    async def _close_history(self) -> None:
        if self.history_writer is not None:
            await self.history_writer.stop()
            self.history_writer = None
        if self.history is not None:
            await self.history.close()
            if self._owns_history:
                self.history = None

    def _mount_studio(self, app: web.Application) -> None:
        """Serve the web studio at /studio from this application (imported only now: it is optional)."""
        try:
            from .studio import setup_studio
        except ImportError as exc:
            logger.warning("studio not served (%s); set STUDIO_ENABLED=false to silence this", exc)
            return
        setup_studio(app, self)

    async def stop(self) -> None:
        """Stop serving and stepping; waits for background work to end."""
        if self._site_runner is not None:
            await self._site_runner.cleanup()
            self._site_runner = None
            takeover.forget(self)
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background = []
        await self.metrics.stop()
        await self.channels.close_all()
        await self._close_history()
        await self.storage.close()
        self.app = None

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C or SIGTERM). Blocking.

        Called from inside a running event loop (as in ``asyncio.run(main())``), the engine runs
        in a thread of its own with its own loop, and this call still blocks until it stops.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            loops.run(self._serve_forever(install_signals=True), self.config.EVENT_LOOP)
            return
        self._run_in_thread()

    def _run_in_thread(self) -> None:
        stop: list[Callable[[], None]] = []
        ready = threading.Event()
        errors: list[BaseException] = []

        def target() -> None:
            async def main() -> None:
                loop = asyncio.get_running_loop()
                finished = asyncio.Event()
                stop.append(lambda: loop.call_soon_threadsafe(finished.set))
                ready.set()
                await self._serve_forever(install_signals=False, until=finished)

            try:
                loops.run(main(), self.config.EVENT_LOOP)
            except BaseException as exc:
                errors.append(exc)
                ready.set()

        thread = threading.Thread(target=target, name="avtomatika-engine", daemon=True)
        thread.start()
        ready.wait()
        # asyncio.run() answers Ctrl-C by cancelling its main task, which is blocked right here, so the
        # cancellation request is polled for and turned into the KeyboardInterrupt the caller expects.
        calling_task = asyncio.current_task()
        try:
            while thread.is_alive():
                thread.join(0.1)
                if calling_task is not None and calling_task.cancelling():
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if stop:
                stop[0]()
            thread.join(10)
            raise
        if errors:
            raise errors[0]

    async def _serve_forever(self, *, install_signals: bool, until: asyncio.Event | None = None) -> None:
        import signal

        finished = until or asyncio.Event()
        if install_signals:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, finished.set)
        await self.start()
        try:
            await finished.wait()
        finally:
            await self.stop()

    # -- jobs ------------------------------------------------------------------------------------
    async def create_job(
        self,
        blueprint_name: str,
        initial_data: dict[str, Any] | None = None,
        *,
        client: str | None = None,
        parent_job_id: str | None = None,
        job_id: str | None = None,
        tracing_context: dict[str, str] | None = None,
        actor: str | None = None,
    ) -> Job:
        """Create a job at its blueprint's start state and queue it to run.

        ``client`` owns the job (it alone sees it through the client API); ``actor`` is who asked,
        when not the client itself (an operator in the studio), and is recorded in history.
        """
        blueprint = self.blueprints.get(blueprint_name)
        if blueprint is None:
            raise UnknownBlueprint(blueprint_name)
        data = dict(initial_data or {})
        if blueprint.input_model is not None:
            data = blueprint.input_model.model_validate(data).model_dump(mode="json")  # type: ignore[attr-defined]
        start = blueprint.start_state or ""
        job_id = job_id or new_id()
        tracing_context = self.tracer.job_trace_context(tracing_context, job_id=job_id, blueprint=blueprint_name)
        job = Job(
            id=job_id,
            blueprint=blueprint_name,
            state=start,
            initial_data=data,
            client=client,
            parent_job_id=parent_job_id,
            visits={start: 1},
            tracing_context=dict(tracing_context or {}),
        )
        job = await self.storage.create_job(job)
        self.events.publish(
            Event(
                EventKind.JOB_CREATED,
                job.id,
                job.blueprint,
                job.state,
                job.status,
                {
                    "initial_data": data,
                    "client": client,
                    "actor": actor or (f"client:{client}" if client else None),
                    "parent_job_id": parent_job_id,
                    "blueprint_version": blueprint.version,
                },
            )
        )
        return job

    async def get_job(self, job_id: str) -> Job | None:
        return await self.storage.get_job(job_id)

    async def require_job(self, job_id: str, client: str | None = None) -> Job:
        """The job, or JobNotFound, also when it belongs to another client than ``client``."""
        job = await self.storage.get_job(job_id)
        if job is None or (client is not None and job.client != client):
            raise JobNotFound(job_id)
        return job

    async def job_history(self, job_id: str, client: str | None = None) -> list[TimelineEntry]:
        """The job's timeline from history (what was buffered is written first).

        Raises JobNotFound for an unknown job, or one of another client than ``client``.
        """
        if self.history is None:
            raise JobNotFound(job_id)
        if self.history_writer is not None:
            await self.history_writer.flush()
        live = await self.storage.get_job(job_id)
        row = await self.history.get_job(job_id) if live is None else None
        owner = live.client if live is not None else (row.client if row is not None else None)
        if (live is None and row is None) or (client is not None and owner != client):
            raise JobNotFound(job_id)
        return await self.history.timeline(job_id)

    async def history_jobs(
        self, where: HistoryFilter, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[JobRow], str | None]:
        """A page of jobs from history, newest first, and the cursor of the next page (or None).

        What is buffered is written first, so a job created a moment ago is listed. Raises
        InvalidCursor for a cursor this engine did not hand out.
        """
        if self.history is None:
            return [], None
        if self.history_writer is not None:
            await self.history_writer.flush()
        page = await self.history.list_jobs(where, limit, cursor)
        return page.jobs, page.next_cursor.encode() if page.next_cursor is not None else None

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        blueprint: str | None = None,
        state: str | None = None,
        client: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Job]:
        return await self.storage.list_jobs(JobFilter(status, blueprint, client, state), limit, offset)

    @staticmethod
    def current_task_ids(job: Job) -> list[str]:
        """Ids of the tasks the job is waiting on (or holds, when quarantined)."""
        wait = job.wait or {}
        return list(wait.get("held_task_ids" if job.status == JobStatus.QUARANTINED else "task_ids", []))

    async def current_tasks(self, job: Job, limit: int | None = None) -> list[Task]:
        """The tasks the job is waiting on (or holds, when quarantined); the first ``limit`` of them."""
        tasks = [await self.storage.get_task(task_id) for task_id in self.current_task_ids(job)[:limit]]
        return [t for t in tasks if t is not None]

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

    async def dashboard(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for (_, status, _), n in (await self.storage.count_jobs()).items():
            counts[status] = counts.get(status, 0) + n
        workers = await self.storage.list_workers()
        at = now()
        return {
            "jobs": {"total": sum(counts.values()), "by_status": counts},
            "workers": {"total": len(workers), "alive": sum(1 for w in workers if w.alive(at))},
            "queues": await self.storage.queue_lengths(),
        }

    # -- workers ---------------------------------------------------------------------------------
    @property
    def worker_ttl_s(self) -> float:
        return 2 * self.config.WORKER_HEALTH_CHECK_INTERVAL_SECONDS

    async def register_worker(self, info: dict[str, Any]) -> WorkerRecord:
        worker_id = str(info["worker_id"])
        existing = await self.storage.get_worker(worker_id)
        at = now()
        record = WorkerRecord(
            worker_id, dict(info), existing.registered_at if existing else at, at, at + self.worker_ttl_s
        )
        await self.storage.save_worker(record)
        self._workers_cache = (0.0, [])
        self.events.publish(
            Event(EventKind.WORKER_REGISTERED, data={"worker_id": worker_id, "supported_tasks": record.supported_tasks})
        )
        return record

    async def heartbeat(self, worker_id: str, changes: dict[str, Any]) -> WorkerRecord:
        record = await self.storage.get_worker(worker_id)
        at = now()
        if record is None or not record.alive(at):
            raise WorkerNotFound(worker_id)
        if changes.get("supported_tasks") == []:
            # SDK 1.0b1 advertises no task types while it is full; the record keeps what it registered.
            changes = {k: v for k, v in changes.items() if k != "supported_tasks"}
        record.info.update(changes)
        record.last_seen = at
        record.expires_at = at + self.worker_ttl_s
        await self.storage.save_worker(record)
        if changes:
            self._workers_cache = (0.0, [])
        return record

    async def list_workers(self) -> list[WorkerRecord]:
        return await self.storage.list_workers()

    async def next_task(self, worker_id: str, timeout_s: float | None = None) -> Task | None:
        """Long poll: the worker's next task, or None after ``timeout_s``."""
        record = await self.storage.get_worker(worker_id)
        if record is None or not record.alive(now()):
            raise WorkerNotFound(worker_id)
        wait_s = self.config.WORKER_POLL_TIMEOUT_SECONDS if timeout_s is None else timeout_s
        task = await self.storage.take_task(
            record, wait_s, self.config.WORKER_TIMEOUT_SECONDS, lambda t: meets_requirements(record, t)
        )
        if task is not None:
            self.events.publish(
                Event(
                    EventKind.TASK_TAKEN,
                    task.job_id,
                    None,
                    task.state,
                    None,
                    {"task_id": task.id, "task_type": task.type, "worker_id": worker_id, "attempt": task.attempt},
                )
            )
        return task

    async def give_back(self, task: Task) -> None:
        """Queue a task taken by a worker that never received it (its long poll hung up)."""

        async def build(job: Job) -> Outcome | None:
            stored = await self.storage.get_task(task.id)
            if (
                stored is None
                or stored.status != TaskStatus.ASSIGNED
                or task.id not in (job.wait or {}).get("task_ids", [])
            ):
                return None
            stored.status, stored.worker_id, stored.taken_at, stored.deadline = TaskStatus.QUEUED, None, None, None
            await self.assign_workers([stored])
            return Outcome(Commit(job, tasks=[stored], cancel_timers=[f"timeout:{task.id}"]))

        with contextlib.suppress(JobNotFound):
            await self.update_job(task.job_id, build)

    async def submit_result(self, job_id: str, task_id: str, worker_id: str, result: dict[str, Any]) -> str:
        return await self.results.submit(job_id, task_id, worker_id, result)

    async def record_progress(
        self, worker_id: str | None, job_id: str, task_id: str, progress: float | None, message: str | None
    ) -> None:
        """Store a worker's progress report. ``worker_id`` None (a WebSocket known only by the global
        token, as SDK 1.0b1 connects) accepts it for whichever worker holds the task."""
        task = await self.storage.get_task(task_id)
        if task is None or task.job_id != job_id or (worker_id is not None and task.worker_id != worker_id):
            return
        await self.storage.update_task(task_id, progress=progress, progress_message=message)
        self.events.publish(
            Event(
                EventKind.TASK_PROGRESS,
                job_id,
                None,
                task.state,
                None,
                {"task_id": task_id, "progress": progress, "message": message},
            )
        )

    def task_timeout_s(self, task: Task) -> float:
        return task_timeout_s(task, self.config.WORKER_TIMEOUT_SECONDS)

    async def assign_workers(self, tasks: list[Task]) -> None:
        """Give each task to a free eligible worker chosen by its strategy, if there is one."""
        cached_at, workers = self._workers_cache
        at = now()
        if at - cached_at > 0.5:
            workers = [w for w in await self.storage.list_workers() if w.alive(at)]
            self._workers_cache = (at, workers)
        if not workers:
            return
        self.chooser.assign(tasks, workers, await self.storage.worker_load())

    def client_info(self, client: str | None) -> dict[str, Any] | None:
        found = self.access.client_by_name(client)
        return found.public() if found is not None else None

    # -- changing jobs ---------------------------------------------------------------------------
    async def update_job(self, job_id: str, build: Callable[[Job], Awaitable[Outcome | None]]) -> Job:
        """Read the job, build an Outcome from it, commit; again from a fresh read on a conflict."""
        for _ in range(MAX_CONFLICT_RETRIES):
            job = await self.storage.get_job(job_id)
            if job is None:
                raise JobNotFound(job_id)
            outcome = await build(job)
            if outcome is None:
                return job
            try:
                return await self.apply(outcome)
            except VersionConflict:
                continue
        raise InvalidOperation(job_id, "the job kept changing; try again")

    async def apply(self, outcome: Outcome) -> Job:
        """Commit an outcome, then publish its events and carry out what follows from it."""
        job = await self.storage.commit(outcome.commit)
        for event in outcome.events:
            if event.status is None or event.job_id == job.id:
                event.status = job.status
            self.events.publish(event)
        for task in outcome.cancel_on_workers:
            if task.worker_id:
                await self.channels.cancel_task(task.worker_id, task.job_id, task.id)
        for child in outcome.children:
            await self.create_job(
                child.blueprint,
                child.initial_data,
                client=child.client,
                parent_job_id=child.parent_job_id,
                job_id=child.id,
                tracing_context=child.tracing_context,
            )
        if job.status in TERMINAL_STATUSES:
            await self._after_end(job, outcome)
        return job

    async def _after_end(self, job: Job, outcome: Outcome) -> None:
        child_id = next((e.data.get("child_job_id") for e in outcome.events if e.data.get("child_job_id")), None)
        if child_id and job.status == JobStatus.CANCELLED:
            with contextlib.suppress(InvalidOperation, JobNotFound):
                await self.operations.cancel(child_id, f"parent job {job.id}")
        if job.parent_job_id and job.status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED):
            await self.operations.resume_parent(job)
