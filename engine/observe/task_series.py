"""The metrics counted once or twice per task: tasks dispatched, and each one's dispatch-to-result latency.

They are counted in plain numbers and become Prometheus families when scraped (a collector), with the
names, labels and samples prometheus_client's ``Counter`` and ``Histogram`` give them (``_total``,
``_bucket``, ``_count``, ``_sum``, ``_created``). Through ``Counter.inc`` and ``Histogram.observe`` (a
lock taken for each value changed, checks on every call, a label lookup each) a task's two counts were
~4 % of the engine's instructions per task of a fan-out (``benchmarks.instructions`` W3); here a task
is a dict lookup and an addition, and its latency a bisection. Events are counted on the event loop,
where scrapes read them: nothing needs a lock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from ..models import now
from .metric_labels import LabelCap

DISPATCHED = ("orchestrator_tasks_dispatched", "Tasks queued for workers (retries and releases included).")
LATENCY = ("orchestrator_task_latency_seconds", "Time from a task's dispatch to its worker's result.")
#: A task's time from dispatch to its result: queueing plus the worker's run.
TASK_LATENCY_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_LABELS = ("task_type", "instance")


@dataclass(slots=True)
class _Series:
    """One task type's numbers: its count (and, for latency, the sum and the count per bucket, the
    last one past every bound), and when it was first counted."""

    created: float = field(default_factory=now)
    count: int = 0
    total: float = 0.0
    buckets: list[int] = field(default_factory=list)


class TaskSeries:
    """Tasks dispatched and their latency, by task type (bounded by ``task_types``), for ``instance``."""

    def __init__(self, instance: str, task_types: LabelCap, buckets: Sequence[float] = TASK_LATENCY_BUCKETS_S) -> None:
        self.instance = instance
        self.bounds = tuple(float(bound) for bound in buckets)
        self._task_types = task_types
        self._dispatched: dict[str, _Series] = {}
        self._latency: dict[str, _Series] = {}

    def dispatched(self, task_type: str) -> None:
        self._series(self._dispatched, task_type).count += 1

    def answered(self, task_type: str, seconds: float) -> None:
        series = self._series(self._latency, task_type)
        if not series.buckets:
            series.buckets = [0] * (len(self.bounds) + 1)
        series.buckets[bisect.bisect_left(self.bounds, seconds)] += 1  # le: the first bound >= seconds
        series.count += 1
        series.total += seconds

    def _series(self, table: dict[str, _Series], task_type: str) -> _Series:
        """``task_type``'s series in ``table``; a type past the label cap counts in ``_other``'s (the
        table holds labels only, so it stays bounded)."""
        series = table.get(task_type)
        if series is None:
            series = table.setdefault(self._task_types(task_type), _Series())
        return series

    # -- a collector (prometheus_client.registry.Collector) ----------------------------------------
    def describe(self) -> Iterator[Metric]:
        yield self._counter()
        yield self._histogram()

    def collect(self) -> Iterator[Metric]:
        counter = self._counter()
        for task_type, series in sorted(self._dispatched.items()):
            counter.add_metric([task_type, self.instance], series.count, created=series.created)
        yield counter
        histogram = self._histogram()
        for task_type, series in sorted(self._latency.items()):
            labels = [task_type, self.instance]
            histogram.add_metric(labels, self._cumulative(series.buckets), series.total)
            histogram.add_sample(f"{LATENCY[0]}_created", dict(zip(_LABELS, labels, strict=True)), series.created)
        yield histogram

    def _cumulative(self, buckets: list[int]) -> list[tuple[str, float]]:
        bounds = [*map(floatToGoString, self.bounds), "+Inf"]
        counts, running = [], 0
        for count in buckets:
            running += count
            counts.append(running)
        return list(zip(bounds, counts, strict=True))

    @staticmethod
    def _counter() -> CounterMetricFamily:
        return CounterMetricFamily(*DISPATCHED, labels=_LABELS)

    @staticmethod
    def _histogram() -> HistogramMetricFamily:
        return HistogramMetricFamily(*LATENCY, labels=_LABELS)
