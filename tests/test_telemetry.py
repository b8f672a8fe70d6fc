"""Tracing: one trace per job, linked to the creation request's ``traceparent`` and carried to workers.

Spans are collected with the OpenTelemetry SDK's in-memory exporter from a provider handed to the
engine's :class:`Tracer` (never the process-global one, which tests would share). What must work
without the ``telemetry`` extra is checked in fresh interpreters with ``opentelemetry`` blocked.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support.engine import FakeWorker, failure, fast_config, success, wait_for_status

from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.events import EventKind
from avtomatika.models import Job, JobStatus, Task
from avtomatika.observe.telemetry import Tracer, build_provider, clean_context, exporter_names
from avtomatika.runtime.outcomes import end, event
from avtomatika.storage import Commit, MemoryStorage

try:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # without the telemetry extra only the tests of its absence run
    HAS_OTEL = False
else:
    HAS_OTEL = True


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"
W3C = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
#: Whether the engine calls the tracer (the wiring of issue 7): the engine tests below need it.
needs_otel = pytest.mark.skipif(not HAS_OTEL, reason="the telemetry extra is not installed")


class Spans:
    """A tracer provider recording into memory, and ways to read what it recorded."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = Tracer(self.provider)

    @property
    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        [span] = self.named(name)
        return span

    def of_job(self, job_id: str) -> list[ReadableSpan]:
        return [s for s in self.all if (s.attributes or {}).get("avtomatika.job.id") == job_id]


@pytest.fixture
def spans() -> Iterator[Spans]:
    recorded = Spans()
    yield recorded
    recorded.provider.shutdown()


def trace_hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def span_hex(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def parent_hex(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent is not None else None


def parse(tracing_context: dict[str, str]) -> tuple[str, str]:
    """(trace id, span id) of a valid W3C traceparent; fails on anything else."""
    match = W3C.fullmatch(tracing_context.get("traceparent", ""))
    assert match, tracing_context
    return match.group(1), match.group(2)


def a_job(tracing_context: dict[str, str] | None = None) -> Job:
    return Job(id="job-1", blueprint="flow", state="start", tracing_context=tracing_context or {})


def a_task(job: Job, tracing_context: dict[str, str] | None = None) -> Task:
    return Task(
        id="task-1", job_id=job.id, type="echo", state=job.state, worker_id="w1", tracing_context=tracing_context or {}
    )


# -- the facade, without and with a provider -------------------------------------------------------
def test_without_a_provider_the_context_is_passed_on_unchanged() -> None:
    tracer = Tracer()
    assert not tracer.enabled
    carried = tracer.job_trace_context({"traceparent": TRACEPARENT, "junk": 1}, job_id="j", blueprint="flow")  # type: ignore[dict-item]
    assert carried == {"traceparent": TRACEPARENT}
    job = a_job(carried)
    task = a_task(job)
    with tracer.step_span(job) as span:
        span.record(Commit(job))
        assert tracer.dispatch_span(job, task) == {"traceparent": TRACEPARENT}
    with tracer.result_span(a_task(job, carried), success()):
        pass
    assert tracer.job_trace_context(None, job_id="j", blueprint="flow") == {}


def test_clean_context_keeps_only_w3c_strings() -> None:
    assert clean_context({"traceparent": TRACEPARENT, "tracestate": "a=1", "baggage": "x"}) == {
        "traceparent": TRACEPARENT,
        "tracestate": "a=1",
    }
    assert clean_context({"traceparent": 5}) == {}
    assert clean_context("00-abc") == {}
    assert clean_context(None) == {}


@needs_otel
def test_the_spans_of_one_job_form_one_trace_under_the_request(spans: Spans) -> None:
    tracer = spans.tracer
    job = a_job(tracer.job_trace_context({"traceparent": TRACEPARENT}, job_id="job-1", blueprint="flow"))
    assert parse(job.tracing_context)[0] == TRACE_ID
    with tracer.step_span(job) as step:
        sent = tracer.dispatch_span(job, a_task(job))
        step.record(Commit(job))
    task = a_task(job, sent)
    with tracer.result_span(task, success({"y": 1}), "w1"):
        pass

    job_span, step_span, dispatch, result = (
        spans.one("job flow"),
        spans.one("step flow.start"),
        spans.one("dispatch echo"),
        spans.one("result echo"),
    )
    assert {trace_hex(s) for s in spans.all} == {TRACE_ID}
    assert parent_hex(job_span) == CLIENT_SPAN_ID
    assert parse(job.tracing_context)[1] == span_hex(job_span)
    assert parent_hex(step_span) == span_hex(job_span)
    assert parent_hex(dispatch) == span_hex(step_span)  # dispatched during the step
    assert parse(sent) == (TRACE_ID, span_hex(dispatch))  # what the worker receives
    assert parent_hex(result) == span_hex(dispatch)
    assert dispatch.kind == trace.SpanKind.PRODUCER
    assert result.kind == trace.SpanKind.CONSUMER
    assert (dispatch.attributes or {})["avtomatika.task.type"] == "echo"
    assert (result.attributes or {})["avtomatika.result.status"] == "success"
    assert (step_span.attributes or {})["avtomatika.job.id"] == "job-1"


@needs_otel
def test_a_job_without_traceparent_starts_its_own_trace(spans: Spans) -> None:
    tracer = spans.tracer
    first = tracer.job_trace_context(None, job_id="a", blueprint="flow")
    second = tracer.job_trace_context({"traceparent": "00-not-a-trace-01"}, job_id="b", blueprint="flow")
    assert parse(first)[0] != parse(second)[0]
    assert all(s.parent is None for s in spans.all)


@needs_otel
def test_a_job_created_inside_a_span_joins_its_trace(spans: Spans) -> None:
    with spans.provider.get_tracer("app").start_as_current_span("caller") as caller:
        carried = spans.tracer.job_trace_context(None, job_id="a", blueprint="flow")
    assert parse(carried)[0] == f"{caller.get_span_context().trace_id:032x}"


@needs_otel
def test_a_dispatch_outside_a_step_is_a_child_of_the_job(spans: Spans) -> None:
    tracer = spans.tracer
    job = a_job(tracer.job_trace_context(None, job_id="job-1", blueprint="flow"))
    sent = tracer.dispatch_span(job, a_task(job))  # a retry queued by a timer: no step around it
    assert parent_hex(spans.one("dispatch echo")) == parse(job.tracing_context)[1]
    assert parse(sent)[0] == parse(job.tracing_context)[0]


@needs_otel
def test_a_result_continues_from_the_workers_own_span(spans: Spans) -> None:
    tracer = spans.tracer
    job = a_job(tracer.job_trace_context(None, job_id="job-1", blueprint="flow"))
    task = a_task(job, tracer.dispatch_span(job, a_task(job)))
    worker_tracer = spans.provider.get_tracer("worker")
    parent = TraceContextTextMapPropagator().extract(task.tracing_context)
    with worker_tracer.start_as_current_span("worker run", context=parent) as worker_span:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
    with tracer.result_span(task, {**success(), "tracing_context": carrier}, "w1"):
        pass
    result = spans.one("result echo")
    assert parent_hex(result) == f"{worker_span.get_span_context().span_id:016x}"
    assert [f"{link.context.span_id:016x}" for link in result.links] == [parse(task.tracing_context)[1]]
    assert {trace_hex(s) for s in spans.all} == {parse(job.tracing_context)[0]}


@needs_otel
def test_a_failed_result_and_a_failed_step_are_errors(spans: Spans) -> None:
    tracer = spans.tracer
    job = a_job(tracer.job_trace_context(None, job_id="job-1", blueprint="flow"))
    task = a_task(job, tracer.dispatch_span(job, a_task(job)))
    with tracer.result_span(task, failure("PERMANENT_ERROR", "model file is corrupt")):
        pass
    result = spans.one("result echo")
    assert result.status.status_code == StatusCode.ERROR
    assert result.status.description == "PERMANENT_ERROR: model file is corrupt"

    with tracer.step_span(job) as step:
        outcome = end(job, JobStatus.QUARANTINED, "handler raised ValueError: no")
        step.record(outcome)
    quarantined = spans.one("step flow.start")
    assert quarantined.status.status_code == StatusCode.ERROR
    assert quarantined.status.description == "handler raised ValueError: no"
    assert [e.name for e in quarantined.events] == ["job_quarantined"]


@needs_otel
def test_an_exception_inside_a_span_is_recorded_and_raised(spans: Spans) -> None:
    job = a_job()
    with pytest.raises(RuntimeError, match="boom"), spans.tracer.step_span(job):
        raise RuntimeError("boom")
    step = spans.one("step flow.start")
    assert step.status.status_code == StatusCode.ERROR
    assert [e.name for e in step.events] == ["exception"]


@needs_otel
def test_a_handler_retry_marks_the_step_as_an_error(spans: Spans) -> None:
    job = a_job()
    with spans.tracer.step_span(job) as step:
        job.error = "handler raised RuntimeError: flaky"
        step.record(Commit(job, events=[event(EventKind.HANDLER_RETRY, job, error=job.error)]))
    assert spans.one("step flow.start").status.status_code == StatusCode.ERROR


# -- configuration from OTEL_* ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp_proto_grpc"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp_proto_grpc"]),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ["otlp_proto_http"],
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, ["otlp_proto_http"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp_proto_grpc"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, []),
    ],
)
def test_exporters_come_from_the_otel_variables(environ: dict[str, str], names: list[str]) -> None:
    assert exporter_names(environ) == names


@needs_otel
def test_an_unknown_protocol_or_exporter_is_refused() -> None:
    with pytest.raises(RuntimeError, match="unsupported OTLP protocol"):
        exporter_names({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"})
    with pytest.raises(RuntimeError, match="no span exporter named 'zipkin-ish'"):
        build_provider({"OTEL_TRACES_EXPORTER": "zipkin-ish"})


@needs_otel
def test_from_env_follows_the_sdk_switch() -> None:
    assert not Tracer.from_env({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}).enabled


@needs_otel
def test_from_env_uses_the_provider_the_application_set_not_opentelemetry_merely_imported(tmp_path: Path) -> None:
    script = """
        import json
        from opentelemetry import trace  # as redis-py 8 does on import
        from avtomatika.observe.telemetry import Tracer

        imported = Tracer.from_env({}).enabled
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())
        print(json.dumps({"imported": imported, "set": Tracer.from_env({}).enabled}))
    """
    report = _run_python(script, tmp_path)
    assert (report["imported"], report["set"]) == (False, True), report


def _run_python(script: str, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; return the JSON object it printed last, plus stderr."""
    import os
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}, **(env or {})},
    )
    assert proc.returncode == 0, f"--- stderr ---\n{proc.stderr}\n--- stdout ---\n{proc.stdout}"
    lines = proc.stdout.strip().splitlines()
    return {**json.loads(lines[-1]), "stdout_lines": len(lines), "stderr": proc.stderr}


# A job run end to end in-process: created with a traceparent, its task taken and answered.
_RUN_A_JOB = """
import asyncio, json, sys
{prelude}
from avtomatika import Config, OrchestratorEngine, StateMachineBlueprint
from avtomatika.observe.logs import configure_logging
from avtomatika.observe.metrics import Metrics
from avtomatika.storage import MemoryStorage
from avtomatika.observe.telemetry import Tracer

TRACEPARENT = "{traceparent}"
flow = StateMachineBlueprint("flow")

@flow.handler_for("start", is_start=True)
async def start(context):
    context.actions.dispatch_task("echo", {{"n": 1}}, transitions={{"success": "done"}})

@flow.handler_for("done", is_end=True)
async def done(context):
    pass

async def main():
    config = Config(LOG_FORMAT="json", LOG_LEVEL="INFO", STUDIO_ENABLED=False)
    configure_logging(config)
    tracer = Tracer.from_env()
    engine = OrchestratorEngine(MemoryStorage(), config)
    engine.register_blueprint(flow)
    metrics = Metrics(engine, instance="probe")
    await engine.start(http=False)
    try:
        job = await engine.create_job("flow", {{}}, tracing_context={{"traceparent": TRACEPARENT}})
        await engine.register_worker({{"worker_id": "w1", "supported_tasks": ["echo"]}})
        task = await engine.next_task("w1", 10)
        await engine.submit_result(job.id, task.id, "w1", {{"status": "success", "data": {{}}}})
        for _ in range(1000):
            job = await engine.get_job(job.id)
            if job.status == "finished":
                break
            await asyncio.sleep(0.01)
        body, _ = await metrics.render()
    finally:
        await engine.stop()
    engine_tracer = getattr(engine, "tracer", None)
    print(json.dumps({{
        "status": job.status,
        "task_context": task.tracing_context,
        "tracing": tracer.enabled or bool(engine_tracer and engine_tracer.enabled),
        "scraped": b"orchestrator_jobs_total" in body,
        "otel_loaded": sorted(m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")
                              if sys.modules[m] is not None)[:3],
    }}))

asyncio.run(main())
"""


def test_a_job_runs_with_opentelemetry_missing(tmp_path: Path) -> None:
    # The extra is absent (blocked), and the environment asks for traces all the same.
    script = _RUN_A_JOB.format(prelude="sys.modules['opentelemetry'] = None", traceparent=TRACEPARENT)
    report = _run_python(script, tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert report["status"] == "finished", report
    assert report["task_context"] == {"traceparent": TRACEPARENT}  # passed on unchanged
    assert report["tracing"] is False
    assert report["scraped"] is True
    assert report["otel_loaded"] == []
    assert report["stdout_lines"] == 1
    assert "'telemetry' extra is not installed" in report["stderr"]


@needs_otel
def test_nothing_is_traced_or_printed_when_nothing_asks_for_it(tmp_path: Path) -> None:
    report = _run_python(_RUN_A_JOB.format(prelude="", traceparent=TRACEPARENT), tmp_path)
    assert report["status"] == "finished", report
    assert report["tracing"] is False
    assert report["otel_loaded"] == []  # installed, but never imported
    assert report["stdout_lines"] == 1
    assert "opentelemetry" not in report["stderr"].lower()


# -- OTLP export configured by the environment -----------------------------------------------------
@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[Any]]]:
    """An OTLP/HTTP trace receiver on 127.0.0.1: (endpoint, the export requests it received)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[Any] = []

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", received
    await runner.cleanup()


_EXPORT = """
import json
from opentelemetry import trace
from avtomatika.models import Job, Task
from avtomatika.observe.telemetry import Tracer

tracer = Tracer.from_env()
context = tracer.job_trace_context({"traceparent": "%s"}, job_id="job-1", blueprint="flow")
job = Job(id="job-1", blueprint="flow", state="start", tracing_context=context)
with tracer.step_span(job):
    sent = tracer.dispatch_span(job, Task(id="t1", job_id="job-1", type="echo"))
trace.get_tracer_provider().shutdown()  # flushes the batch
print(json.dumps({"enabled": tracer.enabled, "sent": sent}))
"""


@needs_otel
async def test_spans_are_exported_over_otlp_as_the_environment_says(collector, tmp_path: Path) -> None:
    endpoint, received = collector
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "orchestrator-under-test",
    }
    report = await asyncio.to_thread(_run_python, _EXPORT % TRACEPARENT, tmp_path, env)
    assert report["enabled"] is True
    assert report["stdout_lines"] == 1  # the exporter printed nothing
    exported = [
        (resource.resource, span)
        for message in received
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert sorted(span.name for _, span in exported) == ["dispatch echo", "job flow", "step flow.start"]
    assert {span.trace_id.hex() for _, span in exported} == {TRACE_ID}
    services = {a.value.string_value for r, _ in exported for a in r.attributes if a.key == "service.name"}
    assert services == {"orchestrator-under-test"}
    assert parse(report["sent"])[0] == TRACE_ID


# -- the engine, end to end ------------------------------------------------------------------------
def traced_blueprint() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("traced", api_version="v1", api_endpoint="/jobs/traced")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.dispatch_task("echo", {"mode": context.initial_data.get("mode", "ok")}, {"success": "done"})

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    return bp


@needs_otel
async def test_a_job_over_http_is_one_trace_from_the_request_traceparent(make_api, spans: Spans) -> None:
    api = await make_api(traced_blueprint())
    api.engine.tracer = spans.tracer  # type: ignore[attr-defined]
    await api.register("w1")
    status, body = await api.client("POST", "/api/v1/jobs/traced", json={}, headers={"traceparent": TRACEPARENT})
    assert status == 202
    job_id = body["job_id"]
    task = await api.next_task("w1")  # as the worker receives it, over HTTP
    trace_id, parent_span = parse(task["tracing_context"])
    assert trace_id == TRACE_ID
    assert (await api.result(task, "w1", data={"ok": True}))[0] == 200
    await api.wait_job(job_id, "finished")

    mine = spans.of_job(job_id)
    assert {trace_hex(s) for s in mine} == {TRACE_ID}
    assert sorted(s.name for s in mine) == [
        "dispatch echo",
        "job traced",
        "result echo",
        "step traced.done",
        "step traced.start",
    ]
    assert parent_span == span_hex(spans.one("dispatch echo"))
    assert parent_hex(spans.one("job traced")) == CLIENT_SPAN_ID


@needs_otel
async def test_each_job_is_its_own_trace_through_retries(spans: Spans) -> None:
    engine = OrchestratorEngine(MemoryStorage(), fast_config())
    engine.register_blueprint(traced_blueprint())
    engine.tracer = spans.tracer  # type: ignore[attr-defined]  # set before start: kept
    await engine.start(http=False)
    try:
        assert engine.tracer is spans.tracer  # type: ignore[attr-defined]
        first = await engine.create_job("traced", {"mode": "flaky"})
        second = await engine.create_job("traced", {})
        seen: list[dict[str, str]] = []

        def answer(task: Task) -> dict[str, Any]:
            seen.append(task.tracing_context)
            flaky = task.params["mode"] == "flaky" and task.attempt == 1
            return failure("TRANSIENT_ERROR", "again") if flaky else success()

        async with FakeWorker(engine, "w1", ["echo"]) as worker:
            worker.serve(answer)
            await wait_for_status(engine, first.id, "finished")
            await wait_for_status(engine, second.id, "finished")
    finally:
        await engine.stop()

    traces = {job.id: {trace_hex(s) for s in spans.of_job(job.id)} for job in (first, second)}
    assert all(len(ids) == 1 for ids in traces.values()), traces
    assert traces[first.id] != traces[second.id]
    assert len(seen) == 3
    assert {parse(context)[0] for context in seen} == traces[first.id] | traces[second.id]
    flaky_spans = spans.of_job(first.id)
    assert sum(s.name == "dispatch echo" for s in flaky_spans) == 2  # the first attempt and the retry
    errors = [s for s in flaky_spans if s.name == "result echo" and s.status.status_code == StatusCode.ERROR]
    assert len(errors) == 1
