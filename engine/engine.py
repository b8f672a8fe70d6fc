"""The engine: holds blueprints, steps jobs, serves the HTTP API, and is what every face calls.

The HTTP API, the studio and the notebook widgets all call the methods of
:class:`OrchestratorEngine`; none of them touches storage directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .access import AccessRegistry
from .blueprint import StateMachineBlueprint
from .config import Config
from .errors import BlueprintInvalid, ConfigError, JobNotFound, UnknownBlueprint, WorkerNotFound
from .events import Event, EventBus, EventKind, task_taken
from .models import Breakpoint, Job, JobStatus, Task, TaskStatus, WorkerRecord, now
from .observe.logs import configure_logging
from .observe.metrics import Metrics
from .observe.telemetry import Tracer
from .reads import Line, Reader
from .runtime.bulk import BulkActions
from .runtime.commits import Committer
from .runtime.dispatch import meets_requirements
from .runtime.operations import Operations
from .runtime.outcomes import created, new_job
from .runtime.results import ResultProcessor
from .runtime.runner import JobRunner
from .runtime.scheduler import Scheduler
from .runtime.shared import Runtime
from .runtime.watchers import JobWatcher
from .server import crashpoints, loops, takeover
from .server.channels import WorkerChannels
from .storage import Commit, JobFilter, MemoryStorage, Storage
from .timers import TimerKind

if TYPE_CHECKING:
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
        self._owns_history = history is None
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
        self.scheduler = Scheduler(self.runtime, self.results, self.operations, self.bulk)
        self.app: web.Application | None = None
        self.port: int | None = None
        self._site_runner: web.AppRunner | None = None
        self._background: list[asyncio.Task[None]] = []
        self.started_at: float | None = None
        #: Whether the engine's own coroutines step runnable jobs (False: a debugger steps them).
        self.steps_jobs = True
        #: Prometheus metrics (GET /_public/metrics); counts this process's events from now on.
        self.metrics = Metrics(self)

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
        self.watcher.reopen()
        await self._open_history()
        if self.access.clients_open:
            logger.warning(
                "no client tokens configured (CLIENT_TOKEN / CLIENTS_CONFIG_PATH): the client API answers "
                "loopback and TRUSTED_NETWORKS peers only, without tokens"
            )
        if self.access.workers_open:
            logger.warning(
                "no worker tokens configured (GLOBAL_WORKER_TOKEN / WORKERS_CONFIG_PATH): the worker API answers "
                "loopback and TRUSTED_NETWORKS peers only, without tokens"
            )
        self.started_at = now()
        await self.operations.sweep_holds("engine")  # what a process that died may have left held
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
        from .api.server import make_runner

        self.app = create_app(self)
        if self.config.STUDIO_ENABLED:
            self._mount_studio(self.app)
        self._site_runner = make_runner(self.app, self.config, access_log=None, handle_signals=False)
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
        """Write storage's history feed into history (SQLite in a temporary file unless configured)."""
        from .history import HistoryWriter, open_history

        if self.history is None:
            self.history = await open_history(self.config.HISTORY_DATABASE_URI)
        else:
            await self.history.open()
        history = crashpoints.wrap(self.history, crashpoints.HISTORY_WRITES)
        self.history_writer = writer = HistoryWriter(history, self.storage, self.events, lease_s=self.storage.lease_s)
        self.metrics.watch_drops("history", lambda: writer.dropped)
        await self.history_writer.start()
        await self._keep_in_history()

    async def _keep_in_history(self) -> None:
        """What history keeps beside jobs' lines: each blueprint version's graph (a job's page draws the
        graph it ran on); and, with live state in memory, the jobs earlier engines held there and lost."""
        from .graph import extract, model_to_json
        from .history.base import VOLATILE_FEED_PREFIX

        assert self.history is not None
        try:
            for blueprint in self.blueprints.values():
                await self.history.save_graph(blueprint.name, blueprint.version, model_to_json(extract(blueprint)))
            feed = self.storage.feed_id
            if feed.startswith(VOLATILE_FEED_PREFIX):
                await self.history.mark_lost(now(), keep_feed=feed)
        except Exception:  # history is for reading the past: the engine runs without these
            logger.exception("history: could not keep the blueprints' graphs, or mark the jobs lost earlier")

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
        job = new_job(blueprint, initial_data, job_id=job_id, client=client, parent_job_id=parent_job_id)
        job.tracing_context = self.tracer.job_trace_context(tracing_context, job_id=job.id, blueprint=blueprint_name)
        return await self.committer.create_job(job, [created(job, blueprint, actor)])

    async def get_job(self, job_id: str) -> Job | None:
        return await self.storage.get_job(job_id)

    async def require_job(self, job_id: str, client: str | None = None) -> Job:
        """The job, or JobNotFound, also when it belongs to another client than ``client``."""
        job = await self.storage.get_job(job_id)
        if job is None or (client is not None and job.client != client):
            raise JobNotFound(job_id)
        return job

    async def job_history(self, job_id: str, client: str | None = None, *, wait: bool = True) -> list[Line]:
        """The job's timeline from history (with ``wait``, after :meth:`history_lag`).

        Raises JobNotFound for an unknown job, or one of another client than ``client``.
        """
        if wait:
            await self.history_lag()
        known, owner = await self.reads.owner(job_id)
        lines = await self.reads.timeline(job_id, wait=False)
        if not known or lines is None or (client is not None and owner != client):
            raise JobNotFound(job_id)
        return lines

    async def history_lag(self) -> int:
        """Wait (``HISTORY_READ_WAIT_SECONDS`` at most) for the events buffered now to be written to
        history; how many are not yet (0: a read of history now sees everything that happened)."""
        writer = self.history_writer
        return 0 if writer is None else await writer.catch_up(self.config.HISTORY_READ_WAIT_SECONDS)

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
        self.runtime.workers_changed()
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
            self.runtime.workers_changed()
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
        if task is not None:  # storage recorded the same event in history's feed with the take
            self.events.publish(
                task_taken(task.job_id, task.state, task.id, task.type, worker_id, task.attempt, task.taken_at or now())
            )
        return task

    async def give_back(self, task: Task) -> None:
        """Queue a task taken by a worker that never received it (its long poll hung up)."""

        async def build(job: Job) -> Commit | None:
            stored = await self.storage.get_task(task.id)
            if (
                stored is None
                or stored.status != TaskStatus.ASSIGNED
                or task.id not in (job.wait or {}).get("task_ids", [])
            ):
                return None
            stored.status, stored.worker_id, stored.taken_at, stored.deadline = TaskStatus.QUEUED, None, None, None
            await self.runtime.assign_workers([stored])
            return Commit(job, tasks=[stored], cancel_timers=[TimerKind.TIMEOUT.of(task.id)])

        with contextlib.suppress(JobNotFound):
            await self.committer.update_job(task.job_id, build)

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
