"""An engine's lifecycle in its process: start and stop its background tasks, history and HTTP site;
``run()`` serves until a signal (or, called inside a running loop, in a thread of its own).

The facade (:class:`~avtomatika.engine.OrchestratorEngine`) keeps the attributes every face reads
(``app``, ``port``, ``history``, ``started_at``); this module is what sets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from ..models import now
from ..observe.logs import configure_logging
from ..observe.telemetry import Tracer
from . import crashpoints, loops, takeover

if TYPE_CHECKING:
    from ..engine import OrchestratorEngine

logger = logging.getLogger(__name__)


class Lifecycle:
    """Starts, serves and stops one engine.

    Args:
        engine: The engine whose parts are started and stopped.
        owns_history: Whether the history was opened here (then it is dropped at stop, and a new one
            opened at the next start) rather than given to the engine.
    """

    def __init__(self, engine: OrchestratorEngine, *, owns_history: bool) -> None:
        self.engine = engine
        self.owns_history = owns_history
        self._site_runner: web.AppRunner | None = None
        self._background: list[asyncio.Task[None]] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the engine runs in, while it runs."""
        return self._background[0].get_loop() if self._background else None

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return bool(self._background)

    async def start(self, host: str | None = None, port: int | None = None, *, http: bool = True) -> None:
        """:meth:`OrchestratorEngine.start <avtomatika.engine.OrchestratorEngine.start>`: no consumer steps
        jobs unless the engine's ``steps_jobs``."""
        engine = self.engine
        if self._background:
            raise RuntimeError("the engine is already started")
        configure_logging(engine.config)
        if not engine.tracer.enabled:
            engine.tracer = Tracer.from_env()
        await engine.storage.connect()
        engine.watcher.reopen()
        await self._open_history()
        if engine.access.clients_open:
            logger.warning(
                "no client tokens configured (CLIENT_TOKEN / CLIENTS_CONFIG_PATH): the client API answers "
                "loopback and TRUSTED_NETWORKS peers only, without tokens"
            )
        if engine.access.workers_open:
            logger.warning(
                "no worker tokens configured (GLOBAL_WORKER_TOKEN / WORKERS_CONFIG_PATH): the worker API answers "
                "loopback and TRUSTED_NETWORKS peers only, without tokens"
            )
        engine.started_at = now()
        await engine.operations.sweep_holds("engine")  # what a process that died may have left held
        loop = asyncio.get_running_loop()
        consumers = [
            loop.create_task(engine.runner.consume(), name=f"avtomatika-step-{i}")
            for i in range(engine.config.EXECUTOR_CONCURRENCY if engine.steps_jobs else 0)
        ]
        self._background = [*consumers, loop.create_task(engine.scheduler.run(), name="avtomatika-scheduler")]
        engine.metrics.start()
        if engine.config.HISTORY_RETENTION_DAYS > 0 and engine.history is not None:
            from ..history import retention_loop

            retention = retention_loop(engine.history, engine.config.HISTORY_RETENTION_DAYS)
            self._background.append(loop.create_task(retention, name="avtomatika-history-retention"))
        transport = engine.storage.event_transport()
        if transport is not None:
            self._background.append(loop.create_task(engine.events.run_transport(transport), name="avtomatika-events"))
        commands = engine.storage.worker_command_transport()
        if commands is not None:  # cancel_task reaches a worker whose WebSocket is open on another engine
            self._background.append(loop.create_task(engine.channels.run_relay(commands), name="avtomatika-commands"))
        if http:
            await self._serve(host or engine.config.API_HOST, engine.config.API_PORT if port is None else port)

    async def _serve(self, host: str, port: int) -> None:
        from ..api.app import create_app
        from ..api.server import make_runner

        engine = self.engine
        engine.app = create_app(engine)
        if engine.config.STUDIO_ENABLED:
            self._mount_studio(engine.app)
        self._site_runner = make_runner(engine.app, engine.config, access_log=None, handle_signals=False)
        await self._site_runner.setup()
        site = web.TCPSite(self._site_runner, host, port)
        await takeover.take_over(engine, port)  # an earlier engine of this process on this port (a notebook)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        engine.port = sockets[0].getsockname()[1] if sockets else port
        takeover.serving(engine, engine.port)
        logger.info("avtomatika engine serving on http://%s:%s", host, engine.port)

    async def _open_history(self) -> None:
        """Write storage's history feed into history (SQLite in a temporary file unless configured)."""
        from ..history import HistoryWriter, open_history

        engine = self.engine
        if engine.history is None:
            engine.history = await open_history(engine.config.HISTORY_DATABASE_URI)
        else:
            await engine.history.open()
        history = crashpoints.wrap(engine.history, crashpoints.HISTORY_WRITES)
        engine.history_writer = writer = HistoryWriter(
            history, engine.storage, engine.events, lease_s=engine.storage.lease_s
        )
        engine.metrics.watch_drops("history", lambda: writer.dropped)
        await engine.history_writer.start()
        await self._keep_in_history()

    async def _keep_in_history(self) -> None:
        """What history keeps beside jobs' lines: each blueprint version's graph (a job's page draws the
        graph it ran on); and, with live state in memory, the jobs earlier engines held there and lost."""
        from ..graph import extract, model_to_json
        from ..history.base import VOLATILE_FEED_PREFIX

        engine = self.engine
        assert engine.history is not None
        try:
            for blueprint in engine.blueprints.values():
                await engine.history.save_graph(blueprint.name, blueprint.version, model_to_json(extract(blueprint)))
            feed = engine.storage.feed_id
            if feed.startswith(VOLATILE_FEED_PREFIX):
                await engine.history.mark_lost(now(), keep_feed=feed)
        except Exception:  # history is for reading the past: the engine runs without these
            logger.exception("history: could not keep the blueprints' graphs, or mark the jobs lost earlier")

    async def _close_history(self) -> None:
        engine = self.engine
        if engine.history_writer is not None:
            await engine.history_writer.stop()
            engine.history_writer = None
        if engine.history is not None:
            await engine.history.close()
            if self.owns_history:
                engine.history = None

    def _mount_studio(self, app: web.Application) -> None:
        """Serve the web studio at /studio from this application (imported only now: it is optional)."""
        try:
            from ..studio import setup_studio
        except ImportError as exc:
            logger.warning("studio not served (%s); set STUDIO_ENABLED=false to silence this", exc)
            return
        setup_studio(app, self.engine)

    async def end_waiting_requests(self) -> None:
        """Answer what waits at once, for the HTTP site to close: worker long polls (204), clients
        waiting for a job (the job as it is), worker WebSockets (closed)."""
        engine = self.engine
        engine.storage.end_polls()
        engine.watcher.end_waits()
        await engine.channels.close_all()

    async def stop(self) -> None:
        """Stop serving and stepping; waits for background work to end."""
        engine = self.engine
        if self._site_runner is not None:
            await self._site_runner.cleanup()
            self._site_runner = None
            takeover.forget(engine)
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background = []
        await engine.metrics.stop()
        await engine.channels.close_all()
        await self._close_history()
        await engine.storage.close()
        engine.app = None

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C or SIGTERM). Blocking.

        Called from inside a running event loop (as in ``asyncio.run(main())``), the engine runs
        in a thread of its own with its own loop, and this call still blocks until it stops.
        """
        engine = self.engine
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            loops.run(self._serve_forever(install_signals=True), engine.config.EVENT_LOOP)
            return
        self._run_in_thread()

    def _run_in_thread(self) -> None:
        engine = self.engine
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
                loops.run(main(), engine.config.EVENT_LOOP)
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
