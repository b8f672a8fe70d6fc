"""Authentication and ownership: client tokens, clients TOML, worker tokens, per-worker tokens.

Every refused request is checked to have changed nothing.
"""

from __future__ import annotations

import uuid

import pytest
from aiohttp import WSServerHandshakeError
from support.api import CLIENT_HEADER, WORKER_HEADER

from avtomatika import Config, OrchestratorEngine
from avtomatika.errors import ConfigError

CLIENT_TOKEN = "client-token-1"
WORKER_TOKEN = "global-worker-token-1"
ALICE, BOB = "alice-token", "bob-token"
W1, W2 = "w1-token", "w2-token"


@pytest.fixture
def clients_toml(tmp_path):
    path = tmp_path / "clients.toml"
    path.write_text(
        f'[alice]\ntoken = "{ALICE}"\nplan = "pro"\n\n'
        f'[bob]\ntoken = "{BOB}"\nplan = "free"\nparams = {{ region = "eu" }}\n'
        '[anonymous]\ntoken = "anon-token"\n'
    )
    return path


@pytest.fixture
def workers_toml(tmp_path):
    path = tmp_path / "workers.toml"
    path.write_text(f'[w1]\ntoken = "{W1}"\n\n[w2]\ntoken = "{W2}"\n')
    return path


CLIENT_ROUTES = [
    ("POST", "/api/v1/jobs/work", {"n": 1}),
    ("GET", "/api/v1/jobs/{job}", None),
    ("GET", "/api/jobs/{job}", None),
    ("GET", "/api/v1/jobs", None),
    ("POST", "/api/v1/jobs/{job}/cancel", None),
    ("POST", "/api/jobs/{job}/retry", {}),
    ("POST", "/api/v1/jobs/{job}/release", {"params": {"x": 1}}),
    ("POST", "/api/v1/jobs/{job}/fail", {}),
    ("GET", "/api/v1/quarantine", None),
    ("GET", "/api/workers", None),
    ("GET", "/api/v1/dashboard", None),
    ("GET", "/api/blueprints", None),
    ("GET", "/api/v1/blueprints/work/graph", None),
    ("POST", "/_public/webhooks/approval/{job}", {"decision": "approve"}),
]


@pytest.mark.parametrize(("method", "path", "body"), CLIENT_ROUTES)
@pytest.mark.parametrize("headers", [{}, {CLIENT_HEADER: "wrong"}, {CLIENT_HEADER: ""}, {WORKER_HEADER: WORKER_TOKEN}])
async def test_client_routes_need_the_client_token(make_api, method, path, body, headers):
    api = await make_api(
        client_token=CLIENT_TOKEN,
        worker_token=WORKER_TOKEN,
        CLIENT_TOKEN=CLIENT_TOKEN,
        GLOBAL_WORKER_TOKEN=WORKER_TOKEN,
    )
    job_id = await api.create("/api/v1/jobs/approval")
    await api.wait_job(job_id, "waiting_for_human")
    before = await api.engine_job(job_id)
    status, answer = await api.call(method, path.format(job=job_id), json=body, headers=headers)
    assert status == 401
    assert CLIENT_HEADER in answer["error"]
    assert await api.engine_job(job_id) == before
    assert len(await api.engine.list_jobs()) == 1


async def test_the_client_token_opens_the_client_routes(make_api):
    api = await make_api(client_token=CLIENT_TOKEN, CLIENT_TOKEN=CLIENT_TOKEN)
    job_id = await api.create("/api/v1/jobs/approval")
    await api.wait_job(job_id, "waiting_for_human")
    for method, path, body in CLIENT_ROUTES:
        status, _ = await api.client(method, path.format(job=job_id), json=body)
        assert status < 500, path
        assert status != 401, path


async def _quarantined_for(api, token, worker_id):
    """A work job of the client with ``token``, quarantined by ``worker_id`` (already registered)."""
    job_id = await api.create("/api/v1/jobs/work", {"n": 1}, token=token)
    task = await api.next_task(worker_id)
    assert task["job_id"] == job_id
    status, _ = await api.result(task, worker_id, "failure", error={"code": "PERMANENT_ERROR"})
    assert status == 200
    await api.wait_job(job_id, "quarantined", token=token)
    return job_id


async def test_clients_see_and_change_only_their_own_jobs(make_api, clients_toml):
    api = await make_api(CLIENTS_CONFIG_PATH=clients_toml)
    await api.register("w1")
    alice_job = await _quarantined_for(api, ALICE, "w1")
    bob_job = await _quarantined_for(api, BOB, "w1")
    bob_waiting = await api.create("/api/v1/jobs/approval", token=BOB)
    await api.wait_job(bob_waiting, "waiting_for_human", token=BOB)
    before = {job_id: await api.engine_job(job_id) for job_id in (bob_job, bob_waiting)}

    for job_id in (bob_job, bob_waiting):
        for method, path, body in [
            ("GET", "/api/v1/jobs/{job}", None),
            ("GET", "/api/jobs/{job}", None),
            ("POST", "/api/v1/jobs/{job}/cancel", None),
            ("POST", "/api/v1/jobs/{job}/retry", {"from_state": "start"}),
            ("POST", "/api/jobs/{job}/release", {"params": {"n": 2}}),
            ("POST", "/api/v1/jobs/{job}/fail", {"reason": "alice did it"}),
            ("POST", "/_public/webhooks/approval/{job}", {"decision": "approve"}),
        ]:
            status, _ = await api.client(method, path.format(job=job_id), json=body, token=ALICE)
            assert status == 404, (method, path)
    for job_id, job in before.items():
        assert await api.engine_job(job_id) == job

    for prefix in ("/api/v1", "/api"):
        _, listing = await api.client("GET", f"{prefix}/jobs", token=ALICE)
        assert [j["id"] for j in listing["jobs"]] == [alice_job]
        _, listing = await api.client("GET", f"{prefix}/jobs", token=BOB)
        assert {j["id"] for j in listing["jobs"]} == {bob_job, bob_waiting}
        _, listing = await api.client("GET", f"{prefix}/quarantine", token=ALICE)
        assert [j["id"] for j in listing["jobs"]] == [alice_job]

    # each can act on their own
    status, _ = await api.client("POST", f"/api/v1/jobs/{bob_job}/release", json={"params": {"n": 2}}, token=BOB)
    assert status == 200
    assert (await api.next_task("w1"))["params"] == {"n": 2}
    status, _ = await api.client("POST", f"/api/v1/jobs/{alice_job}/fail", token=ALICE)
    assert status == 200
    status, _ = await api.client("POST", f"/api/v1/jobs/{alice_job}/retry", json={"from_state": "start"}, token=ALICE)
    assert status == 200
    status, _ = await api.client("POST", f"/api/v1/jobs/{alice_job}/cancel", token=ALICE)
    assert status == 200
    assert (await api.job(alice_job, token=ALICE))["status"] == "cancelled"


async def test_a_client_named_anonymous_sees_only_its_own_jobs(make_api, clients_toml):
    api = await make_api(CLIENTS_CONFIG_PATH=clients_toml)
    alice_job = await api.create("/api/v1/jobs/simple", token=ALICE)
    status, _ = await api.client("GET", f"/api/v1/jobs/{alice_job}", token="anon-token")
    assert status == 404
    _, listing = await api.client("GET", "/api/v1/jobs", token="anon-token")
    assert listing["jobs"] == []


async def test_the_approval_webhook_needs_the_owners_token(make_api, clients_toml):
    api = await make_api(CLIENTS_CONFIG_PATH=clients_toml)
    job_id = await api.create("/api/v1/jobs/approval", token=ALICE)
    await api.wait_job(job_id, "waiting_for_human", token=ALICE)
    before = await api.engine_job(job_id)
    path = f"/_public/webhooks/approval/{job_id}"
    assert (await api.call("POST", path, json={"decision": "approve"}))[0] == 401
    assert (await api.client("POST", path, json={"decision": "approve"}, token="forged"))[0] == 401
    assert (await api.client("POST", path, json={"decision": "approve"}, token=BOB))[0] == 404
    assert await api.engine_job(job_id) == before
    status, _ = await api.client("POST", path, json={"decision": "approve"}, token=ALICE)
    assert status == 200
    view = await api.wait_job(job_id, "finished", token=ALICE)
    assert view["state_history"]["approval"] == {"decision": "approve", "actor": "client:alice"}


async def test_the_handler_sees_its_client_but_never_the_token(make_api, clients_toml):
    from avtomatika import StateMachineBlueprint

    flow = StateMachineBlueprint("who", api_version="v1", api_endpoint="/jobs/who")

    @flow.handler_for("start", is_start=True)
    async def start(context):
        context.state_history["client"] = dict(context.client)
        context.actions.transition_to("done")

    @flow.handler_for("done", is_end=True)
    async def done(context):
        pass

    api = await make_api(flow, CLIENTS_CONFIG_PATH=clients_toml)
    job_id = await api.create("/api/v1/jobs/who", token=BOB)
    view = await api.wait_job(job_id, "finished", token=BOB)
    assert view["state_history"]["client"] == {"name": "bob", "plan": "free", "params": {"region": "eu"}}
    assert BOB not in str(view)


async def test_monthly_attempts_are_counted_on_job_creation(make_api, tmp_path):
    path = tmp_path / "clients.toml"
    path.write_text('[carol]\ntoken = "carol-token"\nmonthly_attempts = 2\n')
    api = await make_api(CLIENTS_CONFIG_PATH=path, client_token="carol-token")
    await api.create("/api/v1/jobs/simple")
    status, _ = await api.client("POST", "/api/v1/jobs/typed", json={"item": "x", "quantity": 0})
    assert status == 400  # refused input is not an attempt
    job_id = await api.create("/api/v1/jobs/simple")
    status, body = await api.client("POST", "/api/v1/jobs/simple", json={})
    assert status == 429
    assert "carol" in body["error"]
    assert len(await api.engine.list_jobs()) == 2
    assert (await api.job(job_id))["id"] == job_id  # reading is not counted


@pytest.mark.parametrize(
    "text",
    [
        '[a]\ntoken = "same"\n[b]\ntoken = "same"\n',
        "[a]\nplan = 'x'\n",
        '[a]\ntoken = "t"\nmonthly_attempts = "many"\n',
        '[a]\ntoken = "t"\nparams = 3\n',
        "not toml [",
    ],
)
def test_bad_clients_toml_fails_at_construction(tmp_path, text):
    path = tmp_path / "clients.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="CLIENTS_CONFIG_PATH"):
        OrchestratorEngine(config=Config(CLIENTS_CONFIG_PATH=path))


def test_workers_sharing_a_token_fail_at_construction(tmp_path):
    path = tmp_path / "workers.toml"
    path.write_text('[w1]\ntoken = "same"\n[w2]\ntoken = "same"\n')
    with pytest.raises(ConfigError, match="WORKERS_CONFIG_PATH"):
        OrchestratorEngine(config=Config(WORKERS_CONFIG_PATH=path))


# -- workers -------------------------------------------------------------------------------------------
WORKER_ROUTES = [
    ("POST", "/_worker/workers/register", {"worker_id": "w9", "supported_tasks": ["echo"]}),
    ("PATCH", "/_worker/workers/w1", {"load": 0.9}),
    ("PATCH", "/_worker/workers/w1", None),
    ("GET", "/_worker/workers/w1/tasks/next", None),
    ("POST", "/_worker/tasks/result", "RESULT"),
    ("POST", "/_worker/tasks/result", {"garbage": True}),
]


@pytest.mark.parametrize(("method", "path", "body"), WORKER_ROUTES)
@pytest.mark.parametrize("headers", [{}, {WORKER_HEADER: "wrong"}, {WORKER_HEADER: ""}, {CLIENT_HEADER: CLIENT_TOKEN}])
async def test_worker_routes_need_a_worker_token(make_api, method, path, body, headers):
    api = await make_api(
        client_token=CLIENT_TOKEN,
        worker_token=WORKER_TOKEN,
        CLIENT_TOKEN=CLIENT_TOKEN,
        GLOBAL_WORKER_TOKEN=WORKER_TOKEN,
        WORKER_POLL_TIMEOUT_SECONDS=0.05,
    )
    job_id, task = await api.take()
    before_job = await api.engine_job(job_id)
    before_worker = await api.engine.storage.get_worker("w1")
    if body == "RESULT":
        body = {**task, "worker_id": "w1", "result": {"status": "success"}}
        body = {k: body[k] for k in ("job_id", "task_id", "worker_id", "result")}
    status, answer = await api.call(method, path, json=body, headers=headers)
    assert status == 401
    assert WORKER_HEADER in answer["error"]
    assert await api.engine_job(job_id) == before_job
    assert await api.engine.storage.get_worker("w1") == before_worker
    assert await api.engine.storage.get_worker("w9") is None


@pytest.mark.parametrize("headers", [{}, {WORKER_HEADER: "wrong"}, {CLIENT_HEADER: CLIENT_TOKEN}])
async def test_websocket_needs_a_worker_token(make_api, headers):
    api = await make_api(CLIENT_TOKEN=CLIENT_TOKEN, GLOBAL_WORKER_TOKEN=WORKER_TOKEN, worker_token=WORKER_TOKEN)
    await api.register("w1")
    for path in ("/_worker/ws/w1", "/_worker/ws"):
        with pytest.raises(WSServerHandshakeError) as refused:
            async with api.http.ws_connect(path, headers=headers):
                pass
        assert refused.value.status == 401


async def test_the_global_worker_token_acts_as_any_worker(make_api):
    api = await make_api(worker_token=WORKER_TOKEN, GLOBAL_WORKER_TOKEN=WORKER_TOKEN)
    job_id, task = await api.take(worker_id="anyone")
    assert (await api.result(task, "anyone"))[0] == 200
    await api.wait_job(job_id, "finished")
    async with api.http.ws_connect("/_worker/ws/anyone", headers=api.worker_headers()):
        pass


async def test_a_worker_token_cannot_act_as_another_worker(make_api, workers_toml):
    api = await make_api(WORKERS_CONFIG_PATH=workers_toml, WORKER_POLL_TIMEOUT_SECONDS=0.05)
    await api.register("w2", token=W2)
    job_id = await api.create()
    task = await api.next_task("w2", token=W2)
    before_job = await api.engine_job(job_id)
    before_worker = await api.engine.storage.get_worker("w2")

    refused = [
        await api.worker("POST", "/_worker/workers/register", json={"worker_id": "w2"}, token=W1),
        await api.worker("PATCH", "/_worker/workers/w2", json={"load": 1.0}, token=W1),
        await api.worker("PATCH", "/_worker/workers/w2", token=W1),
        await api.worker("GET", "/_worker/workers/w2/tasks/next", token=W1),
        await api.result(task, "w2", data={"forged": True}, token=W1),
    ]
    for status, body in refused:
        assert status == 403
        assert "w1" in body["error"]
    with pytest.raises(WSServerHandshakeError) as handshake:
        async with api.http.ws_connect("/_worker/ws/w2", headers=api.worker_headers(W1)):
            pass
    assert handshake.value.status == 403
    assert await api.engine_job(job_id) == before_job
    assert await api.engine.storage.get_worker("w2") == before_worker

    # its own id, and /ws without an id, are fine
    await api.register("w1", token=W1)
    async with api.http.ws_connect("/_worker/ws", headers=api.worker_headers(W1)):
        await api.attached("w1")
    assert (await api.result(task, "w2", token=W2))[0] == 200


async def test_worker_tokens_are_not_client_tokens(make_api, workers_toml, clients_toml):
    api = await make_api(CLIENTS_CONFIG_PATH=clients_toml, WORKERS_CONFIG_PATH=workers_toml)
    status, _ = await api.client("GET", "/api/v1/jobs", token=W1)
    assert status == 401
    status, _ = await api.client("POST", "/api/v1/jobs/simple", json={}, token=W1)
    assert status == 401
    status, _ = await api.worker("POST", "/_worker/workers/register", json={"worker_id": "w1"}, token=ALICE)
    assert status == 401
    status, _ = await api.worker("GET", f"/_worker/workers/{uuid.uuid4()}/tasks/next", token=ALICE)
    assert status == 401
    assert await api.engine.list_jobs() == []
    assert await api.engine.list_workers() == []
