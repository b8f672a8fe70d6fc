"""Per-client views: a client's dashboard counts its own jobs; workers' details are for the open API."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.api import Api, MakeApi
from support.studio import csrf_of

ALICE, BOB = "alice-views-token", "bob-views-token"
SECRET_DETAILS = ("hostname", "ip_address", "current_tasks", "resources", "load", "last_seen")


@pytest.fixture
def clients(tmp_path: Path) -> str:
    path = tmp_path / "clients.toml"
    path.write_text(f'[alice]\ntoken = "{ALICE}"\n\n[bob]\ntoken = "{BOB}"\n')
    return str(path)


async def busy_engine(api: Api) -> None:
    """Alice has 2 jobs, Bob 3 (one of them holding a worker's task), an operator 1."""
    await api.register("w1", ["echo"], hostname="gpu-box-7", ip_address="10.0.0.7", load=0.5)
    for _ in range(2):
        await api.create("/api/v1/jobs/approval", token=ALICE)
    for _ in range(2):
        await api.create("/api/v1/jobs/approval", token=BOB)
    await api.create("/api/v1/jobs/work", token=BOB)
    await api.next_task("w1")
    await api.engine.create_job("approval", {})


async def test_a_clients_dashboard_counts_only_its_jobs(make_api: MakeApi, clients: str) -> None:
    api = await make_api(CLIENTS_CONFIG_PATH=clients, client_token=ALICE)
    await busy_engine(api)
    status, alice = await api.client("GET", "/api/v1/dashboard", token=ALICE)
    assert status == 200, alice
    assert alice["jobs"]["total"] == 2
    assert alice["jobs"]["by_status"] == {"waiting_for_human": 2}
    assert alice["queues"] is None, "queued tasks are every client's"
    assert alice["workers"] == {"total": 1, "alive": 1}
    _, bob = await api.client("GET", "/api/v1/dashboard", token=BOB)
    assert bob["jobs"]["total"] == 3


async def test_a_client_sees_workers_without_their_details(make_api: MakeApi, clients: str) -> None:
    api = await make_api(CLIENTS_CONFIG_PATH=clients, client_token=ALICE)
    await busy_engine(api)
    status, body = await api.client("GET", "/api/v1/workers", token=ALICE)
    assert status == 200, body
    assert body["workers"] == [
        {"worker_id": "w1", "worker_type": None, "supported_tasks": ["echo"], "alive": True, "status": None}
    ]
    text = api.responses[-1]
    for detail in SECRET_DETAILS:
        assert detail not in text, detail


async def test_the_open_api_on_loopback_sees_everything(make_api: MakeApi) -> None:
    api = await make_api()
    await busy_engine(api)
    _, board = await api.client("GET", "/api/v1/dashboard")
    assert board["jobs"]["total"] == 6
    assert isinstance(board["queues"], dict)
    _, body = await api.client("GET", "/api/v1/workers")
    [worker] = body["workers"]
    assert worker["hostname"] == "gpu-box-7"
    assert worker["current_tasks"] == 1


async def test_a_clients_studio_session_sees_workers_without_their_details(make_api: MakeApi, clients: str) -> None:
    api = await make_api(CLIENTS_CONFIG_PATH=clients, client_token=ALICE, studio=True, STUDIO_TOKEN="op-secret")
    await busy_engine(api)
    csrf = await csrf_of(api.http, "/studio/login")
    signed = await api.http.post("/studio/login", data={"csrf_token": csrf, "token": ALICE})
    assert signed.status == 200
    listed = await (await api.http.get("/studio/workers?format=json")).json()
    [worker] = listed["workers"]
    assert worker["worker_id"] == "w1"
    assert worker["tasks"] == []  # w1 holds one of Bob's tasks
    for detail in SECRET_DETAILS:
        assert detail not in worker, detail
    page = await (await api.http.get("/studio/workers")).text()
    assert "gpu-box-7" not in page
    assert "other clients' tasks are not shown" in page
