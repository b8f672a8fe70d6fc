"""Prometheus metrics of one engine, served at ``GET /_public/metrics``.

Two kinds of numbers, kept apart on purpose:

* **What this process did** (jobs created, failed, quarantined, released, retries, job durations,
  task dispatch-to-result latency, event-loop lag) is counted from the engine's events, subscribed
  with ``remote=False`` so an event is counted once, by the process that made it. These series carry
  an ``instance`` label (``hostname:pid`` by default): with several engines on one Redis, ``sum``
  them across instances.
* **The shared state** (task queue lengths, alive workers, jobs by status) is read from storage when
  Prometheus scrapes. Every engine on one Redis reports the same values: aggregate them with ``max``,
  never ``sum``.

Prometheus attaches its own ``instance`` label (the scraped target); ours is then exported as
``exported_instance`` unless the scrape config sets ``honor_labels: true``.

Label values are bounded (``METRICS_MAX_LABEL_VALUES``, :mod:`avtomatika.observe.metric_labels`): task types
and blueprints past the cap are counted under ``_other``, and queue lengths are exported for the task
types queued or taken by an alive worker now, so a worker's types leave with it.

Each :class:`Metrics` has its own :class:`~prometheus_client.CollectorRegistry`, so several engines
in one process (tests, notebooks) never share or collide on series.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase

from ..events import Event, EventKind
from ..models import LIVE_STATUSES, JobStatus, now
from .metric_labels import LabelCap, queue_gauge
from .task_series import TaskSeries

if TYPE_CHECKING:
    from ..engine import OrchestratorEngine

logger = logging.getLogger(__name__)

#: Job durations run from a second to days (human approvals, long batches).
JOB_DURATION_BUCKETS_S = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400)
#: How often the event-loop lag is sampled.
LAG_INTERVAL_S = 0.5

_TERMINAL_EVENTS = {
    EventKind.JOB_FINISHED: JobStatus.FINISHED,
    EventKind.JOB_FAILED: JobStatus.FAILED,
    EventKind.JOB_QUARANTINED: JobStatus.QUARANTINED,
    EventKind.JOB_CANCELLED: JobStatus.CANCELLED,
}
_NUMBER_TYPES = (int, float)  # a tuple: checked faster than ``int | float``, a union built at each call
_RETRY_EVENTS = {EventKind.TASK_RETRY: "task", EventKind.HANDLER_RETRY: "handler", EventKind.JOB_RETRIED: "operator"}


def default_instance() -> str:
    """``hostname:pid``: tells apart engine processes, also several on one host."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Metrics:
    """The engine's Prometheus metrics; counts its events from construction on.

    Args:
        engine: The engine whose events are counted and whose storage is read at scrape time.
        instance: Value of the ``instance`` label on this process's series (``hostname:pid``).
        lag_interval_s: How often :meth:`start`'s background task samples the event-loop lag.
    """

    def __init__(
        self, engine: OrchestratorEngine, *, instance: str | None = None, lag_interval_s: float = LAG_INTERVAL_S
    ) -> None:
        self.engine = engine
        self.instance = instance or default_instance()
        self.lag_interval_s = lag_interval_s
        self.registry = CollectorRegistry()
        self._define_event_series()
        self._shared = _SharedState()
        self._drops = _DropCounters(self.instance)
        self.registry.register(self._shared)
        self.registry.register(self._drops)
        self.watch_drops("event_outbox", lambda: engine.events.dropped)
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}
        self._max_labels = engine.config.METRICS_MAX_LABEL_VALUES
        self._blueprint = LabelCap("blueprint", self._max_labels)
        self._task_type = LabelCap("task_type", self._max_labels)
        self._tasks = TaskSeries(self.instance, self._task_type)  # tasks dispatched, their latency
        self.registry.register(self._tasks)
        self._lag_task: asyncio.Task[None] | None = None
        self._count_by_kind = self._counters()
        self._unsubscribe = engine.events.subscribe(self._on_event, remote=False)

    def __repr__(self) -> str:
        return f"Metrics(instance={self.instance!r})"

    def _define_event_series(self) -> None:
        """The series counted from this process's events (all labelled by ``instance``, last)."""
        registry = self.registry

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, [*labels, "instance"], registry=registry)

        def histogram(name: str, documentation: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
            return Histogram(name, documentation, [*labels, "instance"], buckets=buckets, registry=registry)

        self.jobs_created = counter("orchestrator_jobs_total", "Jobs created.", "blueprint")
        self.jobs_failed = counter("orchestrator_jobs_failed_total", "Jobs that ended failed.", "blueprint")
        self.jobs_quarantined = counter("orchestrator_jobs_quarantined_total", "Jobs put in quarantine.", "blueprint")
        self.jobs_released = counter(
            "orchestrator_jobs_released_total", "Quarantined jobs released by an operator.", "blueprint"
        )
        self.retries = counter(
            "orchestrator_retries_total",
            "Retries, by kind: task (a worker's transient failure), handler (a state handler raised), "
            "operator (a job retried by hand).",
            "blueprint",
            "kind",
        )
        self.job_duration = histogram(
            "orchestrator_job_duration_seconds",
            "Time from a job's creation to its final status.",
            JOB_DURATION_BUCKETS_S,
            "blueprint",
            "status",
        )
        self.loop_lag = Gauge(
            "orchestrator_event_loop_lag_seconds",
            "How late the event loop last woke a sleeping coroutine.",
            ["instance"],
            registry=registry,
        )

    # -- wiring ----------------------------------------------------------------------------------
    def watch_drops(self, buffer: str, read: Callable[[], int]) -> None:
        """Export ``read()`` (a running count of dropped events) as ``orchestrator_dropped_events_total``.

        For example ``metrics.watch_drops("history", lambda: writer.dropped)``.
        """
        self._drops.sources[buffer] = read

    def start(self) -> None:
        """Start sampling the event-loop lag (in the running loop)."""
        if self._lag_task is None:
            self._lag_task = asyncio.get_running_loop().create_task(self._sample_lag(), name="avtomatika-loop-lag")

    async def stop(self) -> None:
        """Stop sampling the event-loop lag; the counters are kept (and still counted)."""
        task, self._lag_task = self._lag_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def close(self) -> None:
        """Stop counting the engine's events."""
        self._unsubscribe()

    # -- scraping --------------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Read the shared state (queues, workers, jobs by status) from storage for the next scrape."""
        for name in self.engine.blueprints:
            # Zero series from the start, so rate() sees the first job of a blueprint.
            blueprint = self._blueprint(name)
            self.jobs_created.labels(blueprint, self.instance)
            self.jobs_failed.labels(blueprint, self.instance)
        storage = self.engine.storage
        try:
            queues, workers, counts = await asyncio.gather(
                storage.queue_lengths(), storage.list_workers(), storage.count_jobs()
            )
        except Exception as exc:
            logger.warning("metrics: could not read storage: %s", exc)
            self._shared.snapshot = None
            return
        at = now()
        alive = [w for w in workers if w.alive(at)]
        by_status: dict[tuple[str, str], int] = {}
        for (blueprint, status, _state), n in counts.items():
            by_status[blueprint, status] = by_status.get((blueprint, status), 0) + n
        for blueprint in self.engine.blueprints:
            for status in LIVE_STATUSES:
                by_status.setdefault((blueprint, status), 0)
        types = {t for w in alive for t in w.supported_tasks}
        self._shared.snapshot = _Snapshot(
            queues=queue_gauge(queues, types, self._max_labels), workers=len(alive), jobs=by_status
        )

    async def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Refresh, then the exposition for an HTTP ``Accept`` header: (body, content type)."""
        await self.refresh()
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    # -- events ----------------------------------------------------------------------------------
    def _series(self, metric: MetricWrapperBase, *labels: str) -> MetricWrapperBase:
        """``metric.labels(*labels, instance)``, remembered: ``labels()`` costs more than the count itself."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels, self.instance)
        return child

    def _counters(self) -> dict[EventKind, Callable[[Event], None]]:
        """What counts each kind of event; the other kinds (a task taken, its progress...) count nothing."""
        return {
            EventKind.JOB_CREATED: self._job_created,
            **dict.fromkeys(_TERMINAL_EVENTS, self._job_ended),
            EventKind.JOB_RELEASED: self._job_released,
            **dict.fromkeys(_RETRY_EVENTS, self._retried),
            EventKind.TASK_DISPATCHED: self._task_dispatched,
            EventKind.TASK_RESULT: self._task_answered,
        }

    def _on_event(self, event: Event) -> None:
        count = self._count_by_kind.get(event.kind)
        if count is not None:
            count(event)

    def _job_created(self, event: Event) -> None:
        self._series(self.jobs_created, self._blueprint(event.blueprint or "")).inc()

    def _job_released(self, event: Event) -> None:
        self._series(self.jobs_released, self._blueprint(event.blueprint or "")).inc()

    def _retried(self, event: Event) -> None:
        self._series(self.retries, self._blueprint(event.blueprint or ""), _RETRY_EVENTS[event.kind]).inc()

    def _task_dispatched(self, event: Event) -> None:
        self._tasks.dispatched(str(event.data.get("task_type")))

    def _job_ended(self, event: Event) -> None:
        blueprint = self._blueprint(event.blueprint or "")
        status = _TERMINAL_EVENTS[event.kind]
        if status == JobStatus.FAILED:
            self._series(self.jobs_failed, blueprint).inc()
        elif status == JobStatus.QUARANTINED:
            self._series(self.jobs_quarantined, blueprint).inc()
        # Every ending event names the job's creation time, so any engine sharing the storage times it.
        created_at = event.data.get("created_at")
        if isinstance(created_at, _NUMBER_TYPES):
            self._series(self.job_duration, blueprint, status).observe(max(0.0, event.at - created_at))

    def _task_answered(self, event: Event) -> None:
        queued_at = event.data.get("queued_at")  # the task's, so a retried task is timed from its retry
        if isinstance(queued_at, _NUMBER_TYPES):
            self._tasks.answered(str(event.data.get("task_type")), max(0.0, event.at - queued_at))

    async def _sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        gauge = self.loop_lag.labels(self.instance)
        while True:
            started = loop.time()
            await asyncio.sleep(self.lag_interval_s)
            gauge.set(max(0.0, loop.time() - started - self.lag_interval_s))


@dataclass(slots=True)
class _Snapshot:
    queues: dict[str, int]
    workers: int
    jobs: dict[tuple[str, str], int]


@dataclass(eq=False)  # a collector is registered by identity (hashable)
class _SharedState:
    """A collector of the storage values read by :meth:`Metrics.refresh` (collectors are synchronous)."""

    snapshot: _Snapshot | None = None

    def describe(self) -> Iterator[Metric]:
        return self._families(_Snapshot({}, 0, {}))

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "orchestrator_storage_up", "1 when storage answered the last scrape.", value=int(self.snapshot is not None)
        )
        if self.snapshot is not None:
            yield from self._families(self.snapshot)

    @staticmethod
    def _families(snapshot: _Snapshot) -> Iterator[Metric]:
        queues = GaugeMetricFamily(
            "orchestrator_task_queue_length", "Tasks queued and not yet taken, by type.", labels=["task_type"]
        )
        for task_type, n in sorted(snapshot.queues.items()):
            queues.add_metric([task_type], n)
        yield queues
        yield GaugeMetricFamily("orchestrator_active_workers", "Registered workers alive.", value=snapshot.workers)
        jobs = GaugeMetricFamily(
            "orchestrator_jobs_by_status", "Jobs in storage, by blueprint and status.", labels=["blueprint", "status"]
        )
        for (blueprint, status), n in sorted(snapshot.jobs.items()):
            jobs.add_metric([blueprint, status], n)
        yield jobs


class _DropCounters:
    """A collector of running counts of dropped events, read from their owners at scrape time."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.sources: dict[str, Callable[[], int]] = {}

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for buffer, read in sorted(self.sources.items()):
            try:
                family.add_metric([buffer, self.instance], read())
            except Exception:
                logger.exception("metrics: could not read the dropped events of %s", buffer)
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "orchestrator_dropped_events",
            "Events dropped because a buffer was full (history: not written to history; event_outbox: not "
            "shared with other engines).",
            labels=["buffer", "instance"],
        )
