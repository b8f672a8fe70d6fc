"""``/-/patterns``: every partial rendered with fixture data; the design reference and screenshot target."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..models import Job, JobStatus, Task, TaskStatus, WorkerRecord
from .contexts import PatternsContext
from .data import JobDetail, JobRow, TimelineLine, WorkerView
from .forms import FormField, StartForm
from .graphs import EdgeMark, GraphMarks, NodeMark
from .render import render_page
from .ui import TONES


def sample_job(status: str = JobStatus.WAITING_FOR_WORKER) -> Job:
    at = time.time()
    return Job(
        id="3f2a9c1e-0000-4000-8000-000000000001",
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
        job_id="3f2a9c1e-0000-4000-8000-000000000001",
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


def samples() -> dict[str, Any]:
    """Fixture data for every partial (names are the partials' variables)."""
    job, task = sample_job(), sample_task()
    held = sample_job(JobStatus.QUARANTINED)
    rows = [JobRow.of(sample_job(status)) for status in JobStatus]
    timeline = [
        TimelineLine(job.created_at, "job_created", "probe", "pending", None, None),
        TimelineLine(job.created_at + 1, "task_dispatched", "transcode", "waiting_for_worker", None, None),
        TimelineLine(job.created_at + 3, "task_retry", "transcode", "waiting_for_worker", "gpu-1", 2100.0),
    ]
    record = WorkerRecord(
        "gpu-1", {"worker_type": "gpu", "supported_tasks": ["transcode"]}, expires_at=time.time() + 60
    )
    nodes = [NodeMark(f"node-{t}", t, ["has-jobs", f"tone-{t}"], 3, f"3 {t}") for t in TONES]
    return {
        "job": job,
        "detail": JobDetail(job, [task], timeline),
        "history_detail": JobDetail(job, [task], None),
        "quarantined": JobDetail(held, [task], None),
        "rows": rows,
        "workers": [WorkerView(record, True, 1, [task]), WorkerView(WorkerRecord("old-1"), False, 0, [])],
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
        "at": time.time(),
    }


async def patterns_page(request: web.Request) -> web.StreamResponse:
    context = PatternsContext(title="Patterns", samples=samples())
    return await render_page(request, "patterns.html", context, section="patterns")


def setup_pattern_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/-/patterns", patterns_page, name="patterns")
