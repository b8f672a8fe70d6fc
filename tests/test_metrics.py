"""Prometheus metrics at ``/_public/metrics`` and the ``/_public/health`` checks.

Jobs are driven in-process (``FakeWorker``) and the metrics scraped over HTTP, then parsed with
prometheus-client's own parser: every check reads one sample by name and labels, never a substring.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from support.api import Api, UnreachableStorage
from support.blueprints import one_task_blueprint
from support.engine import FakeWorker, failure, fast_config, success, wait_for, wait_for_status

from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.api import public
from avtomatika.models import Task
from avtomatika.observe.metrics import Metrics, default_instance
from avtomatika.storage import MemoryStorage

INSTANCE = "engine-a"
#: Whether engine.py creates ``engine.metrics`` itself and stamps terminal events with ``created_at``
#: (the wiring of issue 7); the several-engines test needs it, as the process ending a job may not be
#: the one that created it.


# -- blueprints ------------------------------------------------------------------------------------
def shaky_blueprint(raised: set[str]) -> StateMachineBlueprint:
    """Its start handler raises on a job's first run, then moves on."""
    bp = StateMachineBlueprint("shaky", api_version="v1", api_endpoint="/jobs/shaky")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        if context.job_id not in raised:
            raised.add(context.job_id)
            raise RuntimeError("flaky dependency")
        context.actions.transition_to("done")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    return bp


def answer_by_mode(task: Task) -> dict[str, Any]:
    mode = task.params["mode"]
    if mode == "flaky" and task.attempt == 1:
        return failure("TRANSIENT_ERROR", "try again")
    if mode == "broken":
        return failure("PERMANENT_ERROR", "model file is corrupt")
    if mode == "bad":
        return failure("INVALID_INPUT_ERROR", "no such image")
    return success({"echoed": mode})


# -- reading a scrape ------------------------------------------------------------------------------
class Scrape:
    """One parsed exposition: ``value(name, **labels)`` is the single sample matching those labels."""

    def __init__(self, text: str, parse: Callable[[str], Any] = text_string_to_metric_families) -> None:
        self.families = {family.name: family for family in parse(text)}
        self.samples = [sample for family in self.families.values() for sample in family.samples]

    def matching(self, name: str, **labels: str) -> list[Any]:
        return [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float:
        found = self.matching(name, **labels)
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples: {found}"
        return float(found[0].value)


async def scrape(api: Api, accept: str | None = None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    async with api.http.get("/_public/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.text(), response.headers["Content-Type"]


async def serve_metrics(engine: OrchestratorEngine, metrics: Metrics) -> Metrics:
    """Make ``metrics`` the engine's (served at /_public/metrics), retiring the one it made, if any."""
    made = getattr(engine, "metrics", None)
    if made is not None:
        await made.stop()
        made.close()
    engine.metrics = metrics  # type: ignore[attr-defined]
    return metrics


async def with_metrics(api: Api, **options: Any) -> Metrics:
    """A Metrics labelled ``INSTANCE`` for ``api``'s engine, served at /_public/metrics."""
    return await serve_metrics(api.engine, Metrics(api.engine, instance=INSTANCE, **options))


@pytest.fixture
async def worker_api(make_api) -> AsyncIterator[tuple[Api, FakeWorker]]:
    """An API over the ``flow`` and ``shaky`` blueprints, with metrics and a worker answering by mode."""
    raised: set[str] = set()
    api = await make_api(
        one_task_blueprint("flow", endpoint=True),
        shaky_blueprint(raised),
        JOB_MAX_RETRIES=3,
        RETRY_BACKOFF_MAX_SECONDS=0.05,
    )
    await with_metrics(api)
    worker = await FakeWorker(api.engine, "w1", ["echo"]).register()
    worker.serve(answer_by_mode)
    yield api, worker
    await worker.stop()


# -- counters and histograms after real jobs -------------------------------------------------------
async def test_counters_and_histograms_after_success_retry_quarantine_and_failure(worker_api) -> None:
    api, _ = worker_api
    engine = api.engine
    ok = await engine.create_job("flow", {"mode": "ok"})
    flaky = await engine.create_job("flow", {"mode": "flaky"})
    broken = await engine.create_job("flow", {"mode": "broken"})
    bad = await engine.create_job("flow", {"mode": "bad"})
    shaky = await engine.create_job("shaky", {})
    await wait_for_status(engine, ok.id, "finished")
    assert (await wait_for_status(engine, flaky.id, "finished")).retry_count == 1
    await wait_for_status(engine, broken.id, "quarantined")
    await wait_for_status(engine, bad.id, "failed")
    await wait_for_status(engine, shaky.id, "finished")
    await engine.release_job(broken.id, params={"mode": "ok"})
    await wait_for_status(engine, broken.id, "finished")

    text, content_type = await scrape(api)
    assert content_type.startswith("text/plain")
    m = Scrape(text)
    mine = {"instance": INSTANCE}

    assert m.value("orchestrator_jobs_total", blueprint="flow", **mine) == 4
    assert m.value("orchestrator_jobs_total", blueprint="shaky", **mine) == 1
    assert m.value("orchestrator_jobs_failed_total", blueprint="flow", **mine) == 1
    assert m.value("orchestrator_jobs_failed_total", blueprint="shaky", **mine) == 0
    assert m.value("orchestrator_jobs_quarantined_total", blueprint="flow", **mine) == 1
    assert m.value("orchestrator_jobs_released_total", blueprint="flow", **mine) == 1
    assert m.value("orchestrator_retries_total", blueprint="flow", kind="task", **mine) == 1
    assert m.value("orchestrator_retries_total", blueprint="shaky", kind="handler", **mine) == 1
    assert not m.matching("orchestrator_retries_total", kind="operator")
    # ok 1, flaky 2 (the retry), broken 2 (the release), bad 1
    assert m.value("orchestrator_tasks_dispatched_total", task_type="echo", **mine) == 6

    # One observation per final status reached: the released job ended quarantined, then finished.
    duration = "orchestrator_job_duration_seconds"
    assert m.value(f"{duration}_count", blueprint="flow", status="finished", **mine) == 3
    assert m.value(f"{duration}_count", blueprint="flow", status="quarantined", **mine) == 1
    assert m.value(f"{duration}_count", blueprint="flow", status="failed", **mine) == 1
    assert m.value(f"{duration}_count", blueprint="shaky", status="finished", **mine) == 1
    assert m.value(f"{duration}_bucket", blueprint="flow", status="finished", le="+Inf", **mine) == 3
    assert m.value(f"{duration}_bucket", blueprint="flow", status="finished", le="60.0", **mine) == 3
    assert 0 < m.value(f"{duration}_sum", blueprint="flow", status="finished", **mine) < 60

    latency = "orchestrator_task_latency_seconds"
    assert m.value(f"{latency}_count", task_type="echo", **mine) == 6  # every result, failures included
    assert m.value(f"{latency}_bucket", task_type="echo", le="60.0", **mine) == 6
    assert m.value(f"{latency}_sum", task_type="echo", **mine) > 0

    # Shared state, read from storage at scrape time.
    assert m.value("orchestrator_jobs_by_status", blueprint="flow", status="finished") == 3
    assert m.value("orchestrator_jobs_by_status", blueprint="flow", status="failed") == 1
    assert m.value("orchestrator_jobs_by_status", blueprint="flow", status="quarantined") == 0
    assert m.value("orchestrator_jobs_by_status", blueprint="shaky", status="finished") == 1
    assert m.value("orchestrator_active_workers") == 1
    assert m.value("orchestrator_task_queue_length", task_type="echo") == 0
    assert m.value("orchestrator_storage_up") == 1
    assert m.value("orchestrator_dropped_events_total", buffer="event_outbox", **mine) == 0


async def test_an_operator_retry_is_counted_and_the_job_timed_again(worker_api) -> None:
    api, _ = worker_api
    engine = api.engine
    bad = await engine.create_job("flow", {"mode": "bad"})
    await wait_for_status(engine, bad.id, "failed")
    await engine.retry_job(bad.id)

    async def failed_twice() -> bool:
        return await _value(api, "orchestrator_jobs_failed_total", blueprint="flow") == 2

    await wait_for(failed_twice, "the second failure")
    m = Scrape((await scrape(api))[0])
    assert m.value("orchestrator_retries_total", blueprint="flow", kind="operator", instance=INSTANCE) == 1
    count = "orchestrator_job_duration_seconds_count"
    assert m.value(count, blueprint="flow", status="failed", instance=INSTANCE) == 2


async def _value(api: Api, name: str, **labels: str) -> float:
    return Scrape((await scrape(api))[0]).value(name, instance=INSTANCE, **labels)


async def test_queue_lengths_and_workers_are_read_at_scrape_time(make_api) -> None:
    api = await make_api(one_task_blueprint("flow", endpoint=True))
    await with_metrics(api)
    engine = api.engine
    for _ in range(3):
        await engine.create_job("flow", {"mode": "ok", "task_type": "resize"})
    await wait_for(lambda: _queued(engine, "resize", 3), "three queued resize tasks")
    m = Scrape((await scrape(api))[0])
    assert m.value("orchestrator_task_queue_length", task_type="resize") == 3
    assert m.value("orchestrator_active_workers") == 0
    assert m.value("orchestrator_jobs_by_status", blueprint="flow", status="waiting_for_worker") == 3

    worker = await FakeWorker(engine, "r1", ["resize"]).register()
    await worker.run_one(success())
    m = Scrape((await scrape(api))[0])
    assert m.value("orchestrator_task_queue_length", task_type="resize") == 2
    assert m.value("orchestrator_active_workers") == 1

    for _ in range(2):
        await worker.run_one(success())
    m = Scrape((await scrape(api))[0])
    assert m.value("orchestrator_task_queue_length", task_type="resize") == 0  # still exported, as 0
    assert m.value("orchestrator_jobs_by_status", blueprint="flow", status="waiting_for_worker") == 0


async def _queued(engine: OrchestratorEngine, task_type: str, n: int) -> bool:
    return (await engine.storage.queue_lengths()).get(task_type) == n


async def test_storage_down_at_scrape_time_drops_the_storage_gauges(make_api) -> None:
    class Unreadable(MemoryStorage):
        async def queue_lengths(self) -> dict[str, int]:
            raise ConnectionError("storage host is down")

    api = await make_api(one_task_blueprint("flow", endpoint=True), storage=Unreadable())
    await with_metrics(api)
    m = Scrape((await scrape(api))[0])
    assert m.value("orchestrator_storage_up") == 0
    assert not m.matching("orchestrator_task_queue_length")
    assert not m.matching("orchestrator_active_workers")
    assert m.value("orchestrator_jobs_total", blueprint="flow", instance=INSTANCE) == 0  # counters still served


async def test_history_drops_are_read_from_their_counter(make_api) -> None:
    api = await make_api(one_task_blueprint("flow", endpoint=True))
    metrics = await with_metrics(api)
    dropped = [0]
    metrics.watch_drops("history", lambda: dropped[0])
    dropped[0] = 7
    m = Scrape((await scrape(api))[0])
    assert m.value("orchestrator_dropped_events_total", buffer="history", instance=INSTANCE) == 7
    dropped[0] = 9
    m = Scrape((await scrape(api))[0])
    assert m.value("orchestrator_dropped_events_total", buffer="history", instance=INSTANCE) == 9


async def test_event_loop_lag_is_measured(make_api) -> None:
    api = await make_api(one_task_blueprint("flow", endpoint=True))
    metrics = await with_metrics(api, lag_interval_s=0.01)
    metrics.start()
    try:
        gauge = metrics.loop_lag.labels(INSTANCE)
        await asyncio.sleep(0.05)  # let the sampler start (and take a few samples)
        assert gauge._value.get() < 0.1
        time.sleep(0.2)  # block the loop
        await wait_for(lambda: _at_least(gauge, 0.15), "the lag of a blocked loop")
        m = Scrape((await scrape(api))[0])
        assert m.value("orchestrator_event_loop_lag_seconds", instance=INSTANCE) >= 0
    finally:
        await metrics.stop()
    assert metrics._lag_task is None


async def _at_least(gauge: Any, lag_s: float) -> bool:
    return bool(gauge._value.get() >= lag_s)


async def test_openmetrics_is_served_when_asked_for(worker_api) -> None:
    api, _ = worker_api
    job = await api.engine.create_job("flow", {"mode": "ok"})
    await wait_for_status(api.engine, job.id, "finished")
    text, content_type = await scrape(api, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    m = Scrape(text, openmetrics_families)
    assert m.value("orchestrator_jobs_total", blueprint="flow", instance=INSTANCE) == 1


async def test_engines_in_one_process_keep_their_own_registries(make_api) -> None:
    first = await make_api(one_task_blueprint("flow", endpoint=True))
    second = await make_api(one_task_blueprint("flow", endpoint=True))
    await with_metrics(first)
    await serve_metrics(second.engine, Metrics(second.engine, instance="engine-b"))
    await first.engine.create_job("flow", {"mode": "ok"})
    for _ in range(2):
        await second.engine.create_job("flow", {"mode": "ok"})
    a = Scrape((await scrape(first))[0])
    b = Scrape((await scrape(second))[0])
    assert a.value("orchestrator_jobs_total", blueprint="flow", instance=INSTANCE) == 1
    assert b.value("orchestrator_jobs_total", blueprint="flow", instance="engine-b") == 2
    assert not a.matching("orchestrator_jobs_total", instance="engine-b")


def test_the_default_instance_is_host_and_pid() -> None:
    host, pid = default_instance().rsplit(":", 1)
    assert host
    assert int(pid) > 0


async def test_metrics_not_enabled_is_503(make_api) -> None:
    api = await make_api(one_task_blueprint("flow", endpoint=True))
    served = getattr(api.engine, "metrics", None)
    api.engine.metrics = None  # type: ignore[attr-defined]
    try:
        status, body = await api.call("GET", "/_public/metrics")
    finally:
        api.engine.metrics = served  # type: ignore[attr-defined]  # the engine stops it
    assert status == 503
    assert "metrics" in body["error"]


async def test_the_engine_serves_its_own_metrics(make_api) -> None:
    api = await make_api(one_task_blueprint("flow", endpoint=True))
    await api.engine.create_job("flow", {"mode": "ok"})
    instance = default_instance()

    async def lag_sampled() -> bool:
        m = Scrape((await scrape(api))[0])
        return bool(m.matching("orchestrator_event_loop_lag_seconds", instance=instance))

    await wait_for(lag_sampled, "a sample of the event-loop lag")
    m = Scrape((await scrape(api))[0])
    assert m.value("orchestrator_jobs_total", blueprint="flow", instance=instance) == 1
    assert m.value("orchestrator_dropped_events_total", buffer="history", instance=instance) == 0
    assert m.value("orchestrator_dropped_events_total", buffer="event_outbox", instance=instance) == 0


# -- several engines on one Redis ------------------------------------------------------------------
async def test_several_engines_on_one_redis_count_each_job_once(redis_server, redis_client) -> None:
    from avtomatika.storage.redis import RedisStorage

    engines = []
    for name in ("engine-a", "engine-b"):
        engine = OrchestratorEngine(RedisStorage(url=redis_server.url, lease_s=2.0), fast_config())
        engine.register_blueprint(one_task_blueprint("flow", endpoint=True))
        await serve_metrics(engine, Metrics(engine, instance=name))
        await engine.start(http=False)
        engines.append(engine)
    a, b = engines
    try:
        jobs = [await a.create_job("flow", {"mode": "ok"}) for _ in range(4)]
        queued = [await a.create_job("flow", {"mode": "ok", "task_type": "later"}) for _ in range(2)]
        async with FakeWorker(b, "w1", ["echo"]) as worker:  # the worker talks to the other engine
            worker.serve(answer_by_mode)
            for job in jobs:
                await wait_for_status(b, job.id, "finished")
        await wait_for(lambda: _queued(a, "later", len(queued)), "two queued 'later' tasks")
        scrapes = [Scrape((await engine.metrics.render())[0].decode()) for engine in engines]  # type: ignore[attr-defined]
    finally:
        for engine in engines:
            await engine.stop()

    def total(name: str, **labels: str) -> float:
        """The sum over both engines of each one's own series (absent where it did nothing)."""
        pairs = zip(scrapes, ("engine-a", "engine-b"), strict=True)
        return sum(sample.value for s, i in pairs for sample in s.matching(name, instance=i, **labels))

    assert total("orchestrator_jobs_total", blueprint="flow") == 6  # each job counted once, where it was made
    assert scrapes[1].value("orchestrator_jobs_total", blueprint="flow", instance="engine-b") == 0
    assert total("orchestrator_job_duration_seconds_count", blueprint="flow", status="finished") == 4
    assert total("orchestrator_task_latency_seconds_count", task_type="echo") == 4
    for s in scrapes:  # shared state: both engines read the same Redis
        assert s.value("orchestrator_task_queue_length", task_type="later") == 2
        assert s.value("orchestrator_jobs_by_status", blueprint="flow", status="finished") == 4


# -- health ----------------------------------------------------------------------------------------
class Pinged:
    """An engine's history store answering pings as told; everything else is the real store's."""

    def __init__(self, inner: Any, problem: Exception | None = None, delay_s: float = 0.0) -> None:
        self.inner, self.problem, self.delay_s = inner, problem, delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def ping(self) -> None:
        await asyncio.sleep(self.delay_s)
        if self.problem is not None:
            raise self.problem


@pytest.fixture
async def health_api(make_api) -> AsyncIterator[Callable[..., Any]]:
    """``await health_api(history=..., storage=...)``: an API whose engine's history is replaced; the
    engine gets its own store back before it stops (it closes it)."""
    made: list[tuple[OrchestratorEngine, Any]] = []

    async def make(history: Callable[[Any], Any], **options: Any) -> Api:
        api = await make_api(**options)
        real = api.engine.history  # type: ignore[attr-defined]
        made.append((api.engine, real))
        api.engine.history = history(real)  # type: ignore[attr-defined]
        return api

    yield make
    for engine, real in made:
        engine.history = real  # type: ignore[attr-defined]


async def test_health_names_the_history_when_it_answers(health_api) -> None:
    api = await health_api(lambda real: Pinged(real))
    status, body = await api.call("GET", "/_public/health")
    assert (status, body["status"], body["history"]) == (200, "healthy", "sqlite")


async def test_health_without_history(health_api) -> None:
    api = await health_api(lambda real: None)
    status, body = await api.call("GET", "/_public/health")
    assert (status, body["status"]) == (200, "healthy")
    assert "history" not in body


async def test_health_is_503_when_history_is_unreachable(health_api) -> None:
    api = await health_api(lambda real: Pinged(real, ConnectionError("database is down")))
    status, body = await api.call("GET", "/_public/health")
    assert status == 503
    assert body["status"] == "unhealthy"
    assert body["error"] == "history unreachable: database is down"


async def test_health_names_every_unreachable_backend(health_api) -> None:
    api = await health_api(lambda real: Pinged(real, ConnectionError("database is down")), storage=UnreachableStorage())
    status, body = await api.call("GET", "/_public/health")
    assert status == 503
    assert "storage unreachable: storage host is down" in body["error"]
    assert "history unreachable: database is down" in body["error"]


async def test_health_does_not_hang_on_a_backend_that_never_answers(health_api, monkeypatch) -> None:
    monkeypatch.setattr(public, "HEALTH_TIMEOUT_S", 0.05)
    api = await health_api(lambda real: Pinged(real, delay_s=30))
    started = time.monotonic()
    status, body = await api.call("GET", "/_public/health")
    assert status == 503
    assert "history unreachable: no answer within 0.05 s" in body["error"]
    assert time.monotonic() - started < 5
