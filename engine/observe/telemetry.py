"""Tracing with OpenTelemetry (the ``telemetry`` extra): one trace per job, carried to the workers.

A job's trace starts when it is created: a short ``job <blueprint>`` span, the child of the
creation request's W3C ``traceparent`` when there was one (or of the caller's current span). Its
context is stored in ``job.tracing_context``, so any engine process sharing the job's storage
continues the same trace: a ``step <blueprint>.<state>`` span per handler run, a ``dispatch <type>``
span per task queued (whose context is the task's ``tracing_context``, the ``traceparent`` a worker
receives) and a ``result <type>`` span per result, the child of the worker's own span when its result
carries a ``tracing_context``, else of the dispatch span. (A job created while tracing was off has
no stored context: each of its steps is then a trace of its own.)

:class:`Tracer` is the facade the engine calls. Without a tracer provider it does nothing but pass
the job's trace context along, and imports nothing: ``opentelemetry`` is imported only by
:meth:`Tracer.from_env` when tracing is wanted, so everything works without the extra installed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from importlib import metadata
from typing import TYPE_CHECKING, Any

from ..events import EventKind
from ..models import JobStatus, now

if TYPE_CHECKING:
    from ..models import Job, Task
    from ..storage import Commit

logger = logging.getLogger(__name__)

#: The W3C trace-context keys carried in ``tracing_context`` dicts.
CONTEXT_KEYS = ("traceparent", "tracestate")
#: Instrumentation scope of the engine's spans.
SCOPE = "avtomatika"

_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_FAILED_STATUSES = frozenset({JobStatus.FAILED, JobStatus.QUARANTINED})
_ERROR_EVENTS = frozenset({EventKind.HANDLER_RETRY, EventKind.JOB_QUARANTINED, EventKind.JOB_FAILED})


def clean_context(value: Any) -> dict[str, str]:
    """The W3C keys of ``value`` with string values (stored or worker-sent data is not trusted)."""
    if not value or not isinstance(value, Mapping):  # most jobs carry no trace context: {}
        return {}
    return {k: v for k in CONTEXT_KEYS if isinstance(v := value.get(k), str) and v}


class StepSpan:
    """The span of one handler step, as the runner sees it (a no-op without tracing)."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def record(self, commit: Commit) -> None:
        """Note what the step did: the job's next state and status, and an error status on failure."""
        span = self._span
        if span is None:
            return
        job = commit.job
        span.set_attribute("avtomatika.job.next_state", job.state)
        span.set_attribute("avtomatika.job.status", str(job.status))
        for event in commit.events:
            if event.kind in _ERROR_EVENTS:
                span.add_event(str(event.kind), {"error": str(event.data.get("error") or "")})
        if job.status in _FAILED_STATUSES or any(e.kind == EventKind.HANDLER_RETRY for e in commit.events):
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, job.error or str(job.status)))


#: The step span of a tracer without a provider (records nothing, so one serves every step).
_NO_STEP_SPAN = StepSpan()
#: What step_span gives without tracing: one context for every step (nullcontext can be re-entered).
_NO_STEP_CONTEXT = contextlib.nullcontext(_NO_STEP_SPAN)


class Tracer:
    """Spans of jobs, steps, dispatches and results; a no-op without a provider.

    Args:
        provider: An OpenTelemetry ``TracerProvider`` (the SDK's, or any API implementation). None
            (the default) disables tracing without importing OpenTelemetry; trace contexts received
            with jobs are still passed on to their tasks unchanged.
    """

    def __init__(self, provider: Any = None) -> None:
        self._otel = _Otel(provider) if provider is not None else None

    def __repr__(self) -> str:
        return f"Tracer(enabled={self.enabled})"

    @property
    def enabled(self) -> bool:
        return self._otel is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tracer:
        """The tracer the environment asks for.

        * ``OTEL_SDK_DISABLED=true``: none.
        * ``OTEL_TRACES_EXPORTER`` (other than ``none``) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
          ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set: the global tracer provider if the application
          installed an SDK one, else an SDK provider exporting to those exporters (``otlp`` by default;
          every other ``OTEL_*`` setting is read by the SDK and the exporter), installed as the global
          one when there is none yet.
        * Otherwise, when the application has set a global tracer provider (before the engine
          starts): that one. OpenTelemetry merely imported is not enough: libraries import it (redis-py
          8 does), and spans for the default provider would record nothing at a cost on every step.
        * Otherwise none, and OpenTelemetry is not even imported.
        """
        env = os.environ if environ is None else environ
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls()
        exporters = exporter_names(env)
        if not exporters and "opentelemetry.trace" not in sys.modules:
            return cls()
        try:
            from opentelemetry import trace
        except ImportError:
            logger.warning("OTEL_* tracing is configured but the 'telemetry' extra is not installed: no traces")
            return cls()
        provider = trace.get_tracer_provider()
        if not exporters and isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return cls()  # imported, but nobody set a provider: every span would be a no-op
        if exporters and not hasattr(provider, "add_span_processor"):  # no SDK provider installed yet
            try:
                provider = build_provider(env)
            except (ImportError, RuntimeError) as exc:
                logger.warning("tracing is off: %s", exc)
                return cls()
            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
                trace.set_tracer_provider(provider)  # handlers' own spans join the same export
        return cls(provider)

    # -- the engine's hooks ----------------------------------------------------------------------
    def job_trace_context(
        self, tracing_context: Mapping[str, str] | None, *, job_id: str, blueprint: str
    ) -> dict[str, str]:
        """The trace context to store in a new job: that of its ``job`` span.

        The span is the child of ``tracing_context`` (the creation request's ``traceparent``, or a
        parent job's context for a sub-job), or else of the caller's current span.
        """
        carrier = clean_context(tracing_context)
        otel = self._otel
        if otel is None:
            return carrier
        parent = otel.extract(carrier) if "traceparent" in carrier else None
        span = otel.tracer.start_span(
            f"job {blueprint}",
            context=parent,
            attributes={"avtomatika.job.id": job_id, "avtomatika.blueprint": blueprint},
        )
        try:
            return otel.inject(span) or carrier
        finally:
            span.end()

    def step_span(self, job: Job) -> AbstractContextManager[StepSpan]:
        """A span around one step of ``job`` (its handler and the commit), current while it runs."""
        otel = self._otel
        if otel is None:
            return _NO_STEP_CONTEXT
        return self._step_span(otel, job)

    @staticmethod
    @contextlib.contextmanager
    def _step_span(otel: _Otel, job: Job) -> Iterator[StepSpan]:
        with otel.tracer.start_as_current_span(
            f"step {job.blueprint}.{job.state}",
            context=otel.extract(job.tracing_context),
            attributes=_job_attributes(job),
        ) as span:
            yield StepSpan(span)

    def dispatch_span(self, job: Job, task: Task) -> dict[str, str]:
        """Record the dispatch of ``task``; returns the ``tracing_context`` to send with it.

        The span is the child of the current step's span, or of the job's context when the task is
        queued outside a step (a retry after backoff, a release).
        """
        otel = self._otel
        if otel is None:
            return clean_context(task.tracing_context) or clean_context(job.tracing_context)
        from opentelemetry.trace import SpanKind

        span = otel.tracer.start_span(
            f"dispatch {task.type}",
            context=otel.parent_for(job),
            kind=SpanKind.PRODUCER,
            attributes={**_job_attributes(job), **_task_attributes(task)},
        )
        try:
            return otel.inject(span) or clean_context(job.tracing_context)
        finally:
            span.end()

    def result_span(
        self, task: Task, result: Mapping[str, Any], worker_id: str | None = None
    ) -> AbstractContextManager[None]:
        """A span around the handling of a worker's result for ``task``.

        Its parent is the worker's span when the result carries a ``tracing_context``, else the
        task's dispatch span.
        """
        otel = self._otel
        if otel is None:
            return contextlib.nullcontext()
        return self._result_span(otel, task, result, worker_id)

    @staticmethod
    @contextlib.contextmanager
    def _result_span(otel: _Otel, task: Task, result: Mapping[str, Any], worker_id: str | None) -> Iterator[None]:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        sent = clean_context(result.get("tracing_context"))
        parent = otel.extract(sent or task.tracing_context)
        attributes = {
            **_task_attributes(task),
            "avtomatika.job.id": task.job_id,
            "avtomatika.worker.id": worker_id or task.worker_id or "",
            "avtomatika.result.status": str(result.get("status")),
            "avtomatika.task.latency_s": max(0.0, now() - task.queued_at),
        }
        links = otel.links_to(task.tracing_context) if sent else []
        with otel.tracer.start_as_current_span(
            f"result {task.type}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes, links=links
        ) as span:
            if result.get("status") == "failure":
                span.set_status(Status(StatusCode.ERROR, _describe_error(result.get("error"))))
            yield


class _Otel:
    """The OpenTelemetry objects of an enabled :class:`Tracer` (imported only when one is built)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.trace = trace
        # W3C trace context whatever OTEL_PROPAGATORS says: it is what the worker protocol carries.
        self.propagator = TraceContextTextMapPropagator()
        self.tracer = provider.get_tracer(SCOPE, _version())

    def extract(self, carrier: Mapping[str, str] | None) -> Any:
        """The context of ``carrier``; an empty one (a new trace) when it holds none."""
        return self.propagator.extract(clean_context(carrier))

    def inject(self, span: Any) -> dict[str, str]:
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=self.trace.set_span_in_context(span))
        return carrier

    def parent_for(self, job: Job) -> Any:
        """The current context when its span belongs to ``job``'s trace (a step), else the job's."""
        stored = self.extract(job.tracing_context)
        current = self.trace.get_current_span().get_span_context()
        job_trace = self.trace.get_current_span(stored).get_span_context()
        if current.is_valid and (not job_trace.is_valid or current.trace_id == job_trace.trace_id):
            return None
        return stored

    def links_to(self, carrier: Mapping[str, str] | None) -> list[Any]:
        context = self.trace.get_current_span(self.extract(carrier)).get_span_context()
        return [self.trace.Link(context)] if context.is_valid else []


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The span exporters (entry point names) the ``OTEL_*`` variables ask for; none by default.

    ``OTEL_TRACES_EXPORTER`` lists them (``none`` for none); an OTLP endpoint alone means ``otlp``.
    ``otlp`` is gRPC unless ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` says ``http/protobuf``, as the
    SDK's own auto-configuration does.
    """
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not names and (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        names = "otlp"
    if not names or names.lower() == "none":
        return []
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).strip()
    chosen = []
    for name in (n.strip() for n in names.split(",")):
        if name == "otlp":
            if protocol not in _OTLP_BY_PROTOCOL:
                raise RuntimeError(f"unsupported OTLP protocol {protocol!r} (grpc or http/protobuf)")
            name = _OTLP_BY_PROTOCOL[protocol]
        if name:
            chosen.append(name)
    return chosen


def build_provider(environ: Mapping[str, str] | None = None) -> Any:
    """An SDK ``TracerProvider`` batching spans to the exporters the environment names.

    Its resource comes from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (service name
    ``avtomatika`` when neither names one) and its sampler from ``OTEL_TRACES_SAMPLER``, both read by
    the SDK from the process environment; ``environ`` only chooses the exporters. Raises
    ``ImportError`` without the SDK, ``RuntimeError`` for an unknown exporter.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    env = os.environ if environ is None else environ
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SCOPE}))
    provider = TracerProvider(resource=resource)
    for name in exporter_names(env):
        found = metadata.entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise RuntimeError(f"no span exporter named {name!r} is installed (OTEL_TRACES_EXPORTER)")
        exporter_class = next(iter(found)).load()
        provider.add_span_processor(BatchSpanProcessor(exporter_class()))
    return provider


def _job_attributes(job: Job) -> dict[str, str]:
    return {"avtomatika.job.id": job.id, "avtomatika.blueprint": job.blueprint, "avtomatika.state": job.state}


def _task_attributes(task: Task) -> dict[str, str | int]:
    return {
        "avtomatika.task.id": task.id,
        "avtomatika.task.type": task.type,
        "avtomatika.task.attempt": task.attempt,
        "avtomatika.worker.id": task.worker_id or "",
    }


def _describe_error(error: Any) -> str:
    if isinstance(error, Mapping):
        return ": ".join(str(part) for part in (error.get("code"), error.get("message")) if part) or "failure"
    return str(error or "failure")


def _version() -> str:
    try:
        return metadata.version("avtomatika")
    except metadata.PackageNotFoundError:
        return "unknown"
