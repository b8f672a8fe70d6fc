"""``/-/patterns``: every partial rendered with fixture data; the design reference and screenshot target."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from avtomatika.models import (
    Breakpoint,
    BulkAction,
    BulkKind,
    BulkStatus,
    Job,
    JobStatus,
    Task,
    TaskStatus,
    WorkerRecord,
)
from avtomatika.reads import BranchCounts, JobDetail, JobRow, Line, NavCounts, QueueDepth, Timeline, WorkerView, diff
from avtomatika.runtime.breakpoints import held_wait
from avtomatika.studio.bulk_form import BulkForm, Sample
from avtomatika.studio.contexts import BlueprintStateContext, HoldPanel, PatternsContext
from avtomatika.studio.forms import FormField, StartForm
from avtomatika.studio.marks import EdgeMark, GraphMarks, NodeMark
from avtomatika.studio.render import render_page
from avtomatika.studio.ui import TONES

routes = web.RouteTableDef()

JOB_ID = "3f2a9c1e-0000-4000-8000-000000000001"


def sample_job(status: str = JobStatus.WAITING_FOR_WORKER) -> Job:
    at = time.time()
    return Job(
        id=JOB_ID,
        blueprint="video_pipeline",
        state="transcode",
        status=status,
        initial_data={"url": "s3://bucket/in.mp4", "priority": "normal"},
        state_history={"probe": {"duration_s": 93.4}},
        created_at=at - 72,
        updated_at=at - 12,
        error="PERMANENT_ERROR: codec not supported" if status == JobStatus.QUARANTINED else None,
        visits={"probe": 1, "transcode": 2},
    )


def sample_task() -> Task:
    return Task(
        id="task-1",
        job_id=JOB_ID,
        type="transcode",
        params={"codec": "h264", "bitrate_kbps": 4000},
        state="transcode",
        attempt=2,
        status=TaskStatus.ASSIGNED,
        worker_id="gpu-1",
        taken_at=time.time() - 6,
        progress=0.6,
        progress_message="encoding",
    )


_probed = {"set": {"probe": {"duration_s": 93.4}}}
_retried = {"task_id": "t2", "next_task_id": "t3", "error": "TRANSIENT_ERROR: worker 'cpu-1' expired"}


def sample_timeline(t0: float) -> Timeline:
    """A job that probed, fanned out three thumbnails (one failed once), was quarantined on a codec,
    released with new params, and is transcoding again."""
    lines: list[tuple[float, str, str, str | None, dict[str, Any]]] = [
        (0.0, "job_created", "probe", "pending", {"initial_data": {"url": "s3://bucket/in.mp4"}, "actor": "olga"}),
        (0.1, "step_finished", "probe", "running", {"handler": "probe", "action": "transition", "changes": _probed}),
        (0.1, "state_entered", "thumbs", "running", {"previous": "probe", "via": {"kind": "transition"}}),
        (0.2, "step_finished", "thumbs", "running", {"handler": "thumbs", "action": "fan_out"}),
    ]
    for n in range(3):
        lines.append((0.2, "task_dispatched", "thumbs", "waiting_for_parallel_tasks", _dispatch(f"t{n}", "thumb", n)))
    lines += [
        (0.5, "task_taken", "thumbs", None, {"task_id": "t0", "task_type": "thumb", "worker_id": "cpu-1"}),
        (0.6, "task_taken", "thumbs", None, {"task_id": "t1", "task_type": "thumb", "worker_id": "cpu-2"}),
        (0.7, "task_taken", "thumbs", None, {"task_id": "t2", "task_type": "thumb", "worker_id": "cpu-1"}),
        (1.5, "task_result", "thumbs", None, _result("t0", "thumb", {"status": "success", "data": {"px": 320}})),
        (2.0, "task_result", "thumbs", None, _result("t1", "thumb", {"status": "success", "data": {"px": 640}})),
        (2.2, "task_retry", "thumbs", "waiting_for_parallel_tasks", _retried),
        (3.0, "task_dispatched", "thumbs", "waiting_for_parallel_tasks", _dispatch("t3", "thumb", 2, attempt=2)),
        (3.1, "task_taken", "thumbs", None, {"task_id": "t3", "task_type": "thumb", "worker_id": "cpu-2"}),
        (4.0, "task_result", "thumbs", None, _result("t3", "thumb", {"status": "success", "data": {"px": 1280}})),
        (4.1, "state_entered", "transcode", "running", {"previous": "thumbs", "via": {"kind": "parallel"}}),
        (4.2, "step_finished", "transcode", "running", {"handler": "transcode", "changes": {"set": {"thumbs": 3}}}),
        (4.2, "task_dispatched", "transcode", "waiting_for_worker", _dispatch("t4", "transcode", 0, codec="av2")),
        (5.0, "task_taken", "transcode", None, {"task_id": "t4", "task_type": "transcode", "worker_id": "gpu-1"}),
        (9.0, "task_result", "transcode", None, _result("t4", "transcode", _failed("PERMANENT_ERROR", "codec av2"))),
        (9.0, "job_quarantined", "transcode", "quarantined", {"error": "PERMANENT_ERROR: codec av2"}),
        (30.0, "job_released", "transcode", "waiting_for_worker", {"actor": "olga", "params": {"codec": "h264"}}),
        (30.0, "task_dispatched", "transcode", "waiting_for_worker", _dispatch("t5", "transcode", 0, replaces="t4")),
        (31.0, "task_taken", "transcode", None, {"task_id": "t5", "task_type": "transcode", "worker_id": "gpu-1"}),
    ]
    return Timeline(
        Line(JOB_ID, seq, t0 + dt, kind, state, status, None, None, data)
        for seq, (dt, kind, state, status, data) in enumerate(lines, 1)
    )


def _dispatch(task_id: str, task_type: str, n: int, *, attempt: int = 1, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"task_id": task_id, "task_type": task_type, "attempt": attempt, "params": {"n": n}}
    if "codec" in extra:
        data["params"] = {"codec": extra["codec"], "bitrate_kbps": 4000}
    if "replaces" in extra:
        data["replaces"] = extra["replaces"]
        data["params"] = {"codec": "h264", "bitrate_kbps": 4000}
    return data


def _result(task_id: str, task_type: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"task_id": task_id, "task_type": task_type, "result": result, "worker_id": "gpu-1"}


def _failed(code: str, message: str) -> dict[str, Any]:
    return {"status": "failure", "error": {"code": code, "message": message}}


def breakpoint_samples() -> dict[str, Any]:
    """A held job's panel (one field refused), and a state's breakpoint panel."""
    job = sample_job(JobStatus.HELD)
    every = Breakpoint(job.blueprint, "transcode", actor="operator:ann", created_at=job.created_at - 60)
    own = Breakpoint(job.blueprint, "publish", job_id=job.id, actor="operator:ann")
    job.wait = held_wait(every)
    hold = HoldPanel(job, [every, own], ["probe", "transcode", "publish"], every, '{"url": "s3://in.mp4"}', '{"a": 1,}')
    hold.errors["state_history"] = "state_history is not valid JSON: trailing comma is not allowed: line 1 column 9"
    return {"hold": hold, "state_panel": BlueprintStateContext(job.blueprint, "transcode", [every], 4)}


def samples() -> dict[str, Any]:
    """Fixture data for every partial (names are the partials' variables)."""
    job, task = sample_job(), sample_task()
    held = sample_job(JobStatus.QUARANTINED)
    rows = [JobRow.of(sample_job(status)) for status in JobStatus]
    timeline = sample_timeline(job.created_at)
    record = WorkerRecord(
        "gpu-1", {"worker_type": "gpu", "supported_tasks": ["transcode"]}, expires_at=time.time() + 60
    )
    nodes = [NodeMark(f"node-{t}", t, ["has-jobs", f"tone-{t}"], 3, f"3 {t}") for t in TONES]
    fan_out = timeline.visits_of("thumbs")[0]
    return {
        "job": job,
        "detail": JobDetail(job, [task], timeline, blueprint_version="a1b2c3d4e5f6"),
        "history_detail": JobDetail(job, [task], None),
        "quarantined": JobDetail(held, [task], None),
        "rows": rows,
        "timeline_rows": timeline.rows(),
        "branches": fan_out.branches,
        "fan_out": fan_out.counts,
        "counts": BranchCounts(40, 12, 3, 24, 1),
        "moment": timeline.at(10),
        "visits": timeline.visits_of("transcode"),
        "workers": [
            WorkerView(record, True, 2, [task], [sample_task()]),
            WorkerView(WorkerRecord("old-1"), False, 0),
        ],
        "queues": [QueueDepth("transcode", 3, 1, 1, 1), QueueDepth("thumb", 2, 0, 0, 0)],
        "marks": GraphMarks("graph-sample", nodes, [EdgeMark("edge-a-b-0", ["taken"], 2)]),
        "form": StartForm(
            "video_pipeline",
            [
                FormField("url", "Url", "text", True, "s3://bucket/in.mp4"),
                FormField("bitrate_kbps", "Bitrate", "integer", False, "abc", error="Input should be a valid integer"),
                FormField("codec", "Codec", "select", False, "h264", choices=["h264", "av1"]),
                FormField("hdr", "HDR", "checkbox"),
            ],
        ),
        "json_form": StartForm("raw", None, '{"x": 1,}', {"initial_data": "Not valid JSON (line 1, column 9)"}),
        "nav_counts": NavCounts(3, 2, 1),
        **breakpoint_samples(),
        "at": time.time(),
        **bulk_samples(held.id),
    }


def bulk_samples(job_id: str) -> dict[str, Any]:
    """A release at 5 jobs/s under way (one job skipped), a cancelled retry, a confirm and a refusal."""
    running = BulkAction(BulkKind.RELEASE, 30, 5.0, "operator:olga", {"params": {"codec": "h264"}}, handled=12, done=11)
    running.created_at -= 2.4
    running.record(0, [(job_id, "only quarantined jobs can be released, not failed")], 0)
    cancelled = BulkAction(BulkKind.RETRY, 400, 10.0, "operator:olga", {"from_state": "probe"}, handled=120, done=120)
    cancelled.status, cancelled.cancelled_by = BulkStatus.CANCELLED, "operator:olga"
    form = BulkForm("release-edited", [job_id] * 12, 5.0, params_text='{"codec": "h264"}', params={"codec": "h264"})
    sample = Sample(
        job_id, "transcode", diff({"codec": "av2", "url": "s3://in.mp4"}, {"codec": "h264", "url": "s3://in.mp4"})
    )
    refused = BulkForm("release-edited", errors={"params": "Params: not valid JSON: line 1 column 12"})
    return {
        "bulk_running": running,
        "bulk_cancelled": cancelled,
        "bulk_form": form,
        "bulk_sample": sample,
        "bulk_refused": refused,
    }


@routes.get("/-/patterns", name="patterns")
async def patterns_page(request: web.Request) -> web.StreamResponse:
    context = PatternsContext(title="Patterns", samples=samples())
    return await render_page(request, "patterns.html", context, section="patterns")
