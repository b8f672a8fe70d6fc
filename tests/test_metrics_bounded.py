"""The exposition stays bounded: workers' task types leave with them, and every label is capped."""

from __future__ import annotations

import asyncio
import time
import uuid

from prometheus_client.parser import text_string_to_metric_families
from support.api import Api, MakeApi
from support.blueprints import one_task_blueprint

from avtomatika.observe.metric_labels import OTHER

CAP = 25


async def series(api: Api, name: str) -> dict[str, float]:
    status, text = await api.call("GET", "/_public/metrics")
    assert status == 200
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[sample.labels.get("task_type", "")] = sample.value
    return found


async def test_a_worker_re_registering_with_random_types_cannot_grow_the_exposition(
    make_api: MakeApi,
) -> None:
    api = await make_api(
        METRICS_MAX_LABEL_VALUES=CAP, WORKER_HEALTH_CHECK_INTERVAL_SECONDS=0.2, WATCHER_INTERVAL_SECONDS=0.1
    )
    for _ in range(40):
        await api.register("churner", [uuid.uuid4().hex for _ in range(100)])
        queues = await series(api, "orchestrator_task_queue_length")
        assert len(queues) <= CAP + 1  # and _other
    _, text = await api.call("GET", "/_public/metrics")
    assert len(text.splitlines()) < 400, "bounded by the cap, not by what workers sent"
    # The worker stops heart-beating and expires: its types leave the exposition.
    while any(w.alive(time.time()) for w in await api.engine.list_workers()):
        await asyncio.sleep(0.05)
    assert await series(api, "orchestrator_task_queue_length") == {}


async def test_counters_count_types_past_the_cap_under_other(make_api: MakeApi) -> None:
    api = await make_api(one_task_blueprint("anything", endpoint=True), METRICS_MAX_LABEL_VALUES=CAP)
    for i in range(CAP + 15):
        await api.create("/api/v1/jobs/anything", {"task_type": f"kind-{i}"})
    while sum((await series(api, "orchestrator_tasks_dispatched_total")).values()) < CAP + 15:
        await asyncio.sleep(0.01)
    dispatched = await series(api, "orchestrator_tasks_dispatched_total")
    assert len(dispatched) == CAP + 1
    assert dispatched[OTHER] == 15
    queues = await series(api, "orchestrator_task_queue_length")
    assert len(queues) == CAP + 1
    assert queues[OTHER] == 15
