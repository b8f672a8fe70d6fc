"""Worker routes (prefix ``/_worker``): register, heartbeat, long-poll for tasks, post results, WebSocket."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from ..errors import WorkerNotFound
from .app_keys import engine_key
from .auth import check_owner, check_worker, worker_token
from .errors import ApiError
from .limits import check_size, limits_key
from .payloads import (
    HeartbeatAnswer,
    Registered,
    ResultAck,
    TaskResult,
    TaskWire,
    TtlRefreshed,
    WorkerHeartbeat,
    WorkerRegistration,
    plain_task_result,
)
from .render import json_response, model_response
from .requests import parse, read_json
from .routes import Operation, Routes
from .views import without_secrets, worker_view

logger = logging.getLogger(__name__)

PREFIX = "/_worker"
UNKNOWN_WORKER = {404: "Unknown or expired worker"}
#: Every worker route refuses a worker's token acting for another worker.
routes = Routes("worker", "worker", errors={403: "This worker token belongs to another worker"})


@routes.post(
    f"{PREFIX}/workers/register",
    Operation("Register (or re-register) a worker", {200: Registered}, body=WorkerRegistration),
)
async def register(request: web.Request) -> web.Response:
    owner = worker_token(request)  # a refused token is told so before its body is looked at
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object (the worker record)")
    record = parse(WorkerRegistration, body)
    check_owner(owner, record.worker_id)
    await request.app[engine_key].register_worker(without_secrets(record.model_dump(exclude_none=True)))
    return model_response(Registered(worker_id=record.worker_id))


@routes.patch(
    f"{PREFIX}/workers/{{worker_id}}",
    Operation(
        "Heartbeat: refresh the worker's TTL, merging the body's fields into its record",
        {200: HeartbeatAnswer},
        UNKNOWN_WORKER,
        body=WorkerHeartbeat,
        body_required=False,
    ),
)
async def heartbeat(request: web.Request) -> web.Response:
    worker_id = request.match_info["worker_id"]
    check_worker(request, worker_id)
    body = await read_json(request, allow_empty=True)
    if body is not None and not isinstance(body, dict):
        raise ApiError(400, "the heartbeat body must be a JSON object")
    # Typed like a registration, so a bad field (supported_tasks: 5) cannot break dispatching later.
    fields = parse(WorkerHeartbeat, body or {}).model_dump(exclude_unset=True)
    changes = without_secrets({k: v for k, v in fields.items() if k != "worker_id"})
    engine = request.app[engine_key]
    record = await engine.heartbeat(worker_id, changes)
    if not changes:
        return model_response(TtlRefreshed())
    load = (await engine.reads.worker_load()).get(worker_id, 0)
    return json_response(worker_view(record, load, record.last_seen))


@routes.get(
    f"{PREFIX}/workers/{{worker_id}}/tasks/next",
    Operation(
        "Long poll for the worker's next task (WORKER_POLL_TIMEOUT_SECONDS)",
        {200: TaskWire, 204: None},
        {**UNKNOWN_WORKER, 429: "Too many long polls open for this worker"},
    ),
)
async def next_task(request: web.Request) -> web.Response:
    worker_id = request.match_info["worker_id"]
    check_worker(request, worker_id)
    engine = request.app[engine_key]
    task = await engine.next_task(worker_id)
    if task is None:
        return web.Response(status=204)
    if request.transport is None or request.transport.is_closing():
        await engine.give_back(task)  # the worker hung up while waiting: nobody would run it
        return web.Response(status=204)
    return json_response(task.wire())  # a TaskWire


@routes.post(
    f"{PREFIX}/tasks/result",
    Operation(
        "Post a task's result",
        {200: ResultAck},
        {404: "Unknown job or task", 409: "Not the task the job waits on (late or stale result)"},
        body=TaskResult,
    ),
)
async def task_result(request: web.Request) -> web.Response:
    owner = worker_token(request)
    job_id, task_id, worker_id, result = _read_result(await read_json(request))
    check_owner(owner, worker_id)
    if (data := result.get("data")) is not None:
        limits = request.app[limits_key].limits
        check_size(limits, "result.data", data, limits.max_result_data_bytes)
    status = await request.app[engine_key].submit_result(job_id, task_id, worker_id, result)
    return json_response({"status": status})  # a ResultAck


def _read_result(body: Any) -> tuple[str, str, str, dict[str, Any]]:
    """``(job_id, task_id, worker_id, result)`` of a TaskResult body; 400 naming what is wrong."""
    plain = plain_task_result(body)
    if plain is not None:
        return plain
    parsed = parse(TaskResult, body)
    return parsed.job_id, parsed.task_id, parsed.worker_id, parsed.result.model_dump(exclude_none=True)


WEBSOCKET = Operation(
    "WebSocket: progress reports from the worker, cancel_task commands to it",
    {101: None},
    {**UNKNOWN_WORKER, 400: "Not a WebSocket handshake"},
    websocket=True,
)


@routes.get(f"{PREFIX}/ws", WEBSOCKET)
@routes.get(f"{PREFIX}/ws/{{worker_id}}", WEBSOCKET)
async def websocket(request: web.Request) -> web.WebSocketResponse:
    owner = check_worker(request, request.match_info.get("worker_id"))
    # Without an id in the path or a worker's own token (SDK 1.0b1 under the global token), the socket
    # is anonymous: it receives commands for workers without a socket of their own.
    worker_id = request.match_info.get("worker_id") or owner
    engine = request.app[engine_key]
    if worker_id is not None and await engine.reads.worker(worker_id) is None:
        raise WorkerNotFound(worker_id)
    socket = web.WebSocketResponse(heartbeat=30)
    await socket.prepare(request)
    engine.channels.attach(worker_id, socket)
    try:
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                try:
                    await _on_message(engine, worker_id, message.data)
                except Exception:  # one bad message must not drop the worker's connection
                    logger.exception("worker %s: handling a WebSocket message failed", worker_id)
    finally:
        engine.channels.detach(worker_id, socket)
    return socket


async def _on_message(engine: Any, worker_id: str | None, text: str) -> None:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        logger.warning("worker %s sent a WebSocket message that is not JSON", worker_id)
        return
    if not isinstance(message, dict):
        return
    kind = message.get("event") or message.get("type")  # SDK 1.0b1 writes "type"
    if kind != "progress_update":
        logger.debug("worker %s sent an unknown WebSocket message %r", worker_id, kind)
        return
    progress = message.get("progress")
    note = message.get("message")
    job_id, task_id = message.get("job_id"), message.get("task_id")
    if isinstance(job_id, str) and isinstance(task_id, str):
        await engine.record_progress(
            worker_id,
            job_id,
            task_id,
            float(progress) if isinstance(progress, int | float) and not isinstance(progress, bool) else None,
            str(note)[:1000] if note is not None else None,
        )
