"""Safe by default: who is served without tokens, which Host names, what bodies, which origins.

Requests from another host come from a network namespace the test makes (``support.netns``); the
engine serves real HTTP on its side of the veth pair. Loopback requests go through the test client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from support.api import MakeApi
from support.blueprints import API_BLUEPRINTS
from support.netns import RemotePeer, remote_peer

from avtomatika import Config, OrchestratorEngine
from avtomatika.storage import MemoryStorage

NO_TOKENS: dict[str, Any] = {
    "CLIENT_TOKEN": None,
    "GLOBAL_WORKER_TOKEN": None,
    "CLIENTS_CONFIG_PATH": None,
    "WORKERS_CONFIG_PATH": None,
    "STUDIO_TOKEN": None,
    "STUDIO_VIEWER_TOKEN": None,
    "EXECUTOR_CONCURRENCY": 2,
    "LOG_FORMAT": "text",
}
JOB = {"n": 1}
WORKER = {"worker_id": "intruder", "supported_tasks": ["echo"]}


@pytest.fixture(scope="module")
def peer() -> Iterator[RemotePeer]:
    with remote_peer() as made:
        yield made


@asynccontextmanager
async def serving(peer: RemotePeer, **settings: Any) -> AsyncIterator[OrchestratorEngine]:
    """An engine serving real HTTP on the test's side of the veth pair."""
    engine = OrchestratorEngine(MemoryStorage(), Config(**{**NO_TOKENS, **settings}))
    for blueprint in API_BLUEPRINTS:
        engine.register_blueprint(blueprint)
    await engine.start(peer.host_address, 0)
    try:
        yield engine
    finally:
        await engine.stop()


async def from_peer(peer: RemotePeer, engine: OrchestratorEngine, method: str, path: str, **kwargs: Any) -> Any:
    assert engine.port is not None
    return await asyncio.to_thread(peer.request, method, engine.port, path, **kwargs)


async def nothing_created(engine: OrchestratorEngine) -> None:
    assert await engine.list_jobs() == []
    assert await engine.list_workers() == []


# -- peers -----------------------------------------------------------------------------------------
async def test_without_tokens_a_remote_peer_is_refused_naming_the_setting(peer: RemotePeer) -> None:
    async with serving(peer) as engine:
        job = await from_peer(peer, engine, "POST", "/api/v1/jobs/simple", json_body=JOB)
        assert job.status == 403
        assert "CLIENT_TOKEN" in job.json()["error"]
        assert {"CLIENT_TOKEN", "CLIENTS_CONFIG_PATH", "TRUSTED_NETWORKS"} <= set(job.json()["settings"])
        worker = await from_peer(peer, engine, "POST", "/_worker/workers/register", json_body=WORKER)
        assert worker.status == 403
        assert "GLOBAL_WORKER_TOKEN" in worker.json()["error"]
        for path in ("/api/v1/jobs", "/api/v1/dashboard", "/_public/metrics", "/_public/openapi.json"):
            assert (await from_peer(peer, engine, "GET", path)).status == 403, path
        studio = await from_peer(peer, engine, "GET", "/studio/blueprints", headers={"Accept": "application/json"})
        assert studio.status == 403
        assert "STUDIO_TOKEN" in studio.json()["error"]
        await nothing_created(engine)
        # Probes answer everyone: they tell only whether the engine is up.
        assert (await from_peer(peer, engine, "GET", "/_public/status")).json() == {"status": "ok"}
        assert (await from_peer(peer, engine, "GET", "/_public/health")).status == 200


async def test_with_tokens_a_remote_peer_is_served(peer: RemotePeer) -> None:
    tokens = {"CLIENT_TOKEN": "client-secret", "GLOBAL_WORKER_TOKEN": "worker-secret", "STUDIO_TOKEN": "studio-secret"}
    async with serving(peer, **tokens) as engine:
        refused = await from_peer(peer, engine, "POST", "/api/v1/jobs/simple", json_body=JOB)
        assert refused.status == 401  # the door is open, the token still needed
        job = await from_peer(
            peer, engine, "POST", "/api/v1/jobs/simple", json_body=JOB, headers={"X-Avtomatika-Token": "client-secret"}
        )
        assert job.status == 202, job.text
        worker = await from_peer(
            peer,
            engine,
            "POST",
            "/_worker/workers/register",
            json_body=WORKER,
            headers={"X-Worker-Token": "worker-secret"},
        )
        assert worker.status == 200, worker.text
        login = await from_peer(peer, engine, "GET", "/studio/login")
        assert login.status == 200
        assert [w.worker_id for w in await engine.list_workers()] == ["intruder"]


async def test_trusted_networks_are_served_like_loopback(peer: RemotePeer) -> None:
    async with serving(peer, TRUSTED_NETWORKS=f"{peer.peer_address}/32") as engine:
        job = await from_peer(peer, engine, "POST", "/api/v1/jobs/simple", json_body=JOB)
        assert job.status == 202, job.text
        worker = await from_peer(peer, engine, "POST", "/_worker/workers/register", json_body=WORKER)
        assert worker.status == 200, worker.text
        studio = await from_peer(peer, engine, "GET", "/studio/blueprints", headers={"Accept": "application/json"})
        assert studio.status == 200, studio.text


async def test_the_bound_address_is_an_allowed_host_and_other_names_are_not(peer: RemotePeer) -> None:
    async with serving(peer, TRUSTED_NETWORKS=f"{peer.peer_address}/32") as engine:
        bound = await from_peer(peer, engine, "GET", "/api/v1/blueprints")  # Host: the bound address
        assert bound.status == 200, bound.text
        named = await from_peer(peer, engine, "GET", "/api/v1/blueprints", headers={"Host": "engine.example:80"})
        assert named.status == 400
        assert named.json()["field"] == "Host"
        assert "ALLOWED_HOSTS" in named.json()["error"]
    async with serving(peer, TRUSTED_NETWORKS=f"{peer.peer_address}/32", ALLOWED_HOSTS="engine.example") as engine:
        named = await from_peer(peer, engine, "GET", "/api/v1/blueprints", headers={"Host": "engine.example:80"})
        assert named.status == 200, named.text


async def test_a_request_relayed_by_a_proxy_is_not_a_loopback_one(make_api: MakeApi) -> None:
    api = await make_api()
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        status, body = await api.client("POST", "/api/v1/jobs/simple", json=JOB, headers={header: "198.51.100.7"})
        assert status == 403, (header, body)
    assert await api.engine.list_jobs() == []


# -- Host ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "127.0.0.1.attacker.example", "[::2]"])
@pytest.mark.parametrize("path", ["/api/v1/blueprints", "/studio/blueprints", "/_public/metrics"])
async def test_a_foreign_host_name_is_refused(make_api: MakeApi, host: str, path: str) -> None:
    api = await make_api(studio=True)
    status, body = await api.call("GET", path, headers={"Host": host, "Accept": "application/json"})
    assert status == 400, body
    assert body["field"] == "Host"
    assert "csrf" not in str(body).lower()


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:9", "studio.localhost", "127.0.0.1:1", "127.9.9.9", "[::1]:80"]
)
async def test_loopback_names_are_allowed_hosts(make_api: MakeApi, host: str) -> None:
    api = await make_api()
    status, body = await api.call("GET", "/api/v1/blueprints", headers={"Host": host})
    assert status == 200, body


@pytest.mark.parametrize(
    ("allowed", "host", "expected"),
    [
        ("engine.example", "engine.example", 200),
        ("engine.example", "ENGINE.example:8080", 200),
        ("engine.example", "other.example", 400),
        (".example.org", "api.example.org", 200),
        (".example.org", "example.org", 200),
        (".example.org", "example.org.evil", 400),
        ("*", "anything.example", 200),
    ],
)
async def test_allowed_hosts_adds_names(make_api: MakeApi, allowed: str, host: str, expected: int) -> None:
    api = await make_api(ALLOWED_HOSTS=allowed)
    status, body = await api.call("GET", "/api/v1/blueprints", headers={"Host": host})
    assert status == expected, body


# -- bodies ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
@pytest.mark.parametrize(
    ("side", "path", "body"),
    [
        ("client", "/api/v1/jobs/simple", '{"n": 1}'),
        ("worker", "/_worker/workers/register", '{"worker_id": "w9"}'),
        ("client", "/_public/webhooks/approval/some-job", '{"decision": "ship"}'),
    ],
)
async def test_json_endpoints_take_only_json_bodies(
    make_api: MakeApi, content_type: str, side: str, path: str, body: str
) -> None:
    api = await make_api()
    status, answer = await api.call("POST", path, data=body, headers={"Content-Type": content_type})
    assert status in (415, 404), answer  # the webhook looks its job up first
    if status == 415:
        assert answer["field"] == "Content-Type"
        assert content_type in answer["error"]
    await nothing_created(api.engine)


async def test_a_json_type_with_a_suffix_or_charset_is_json(make_api: MakeApi) -> None:
    api = await make_api()
    for content_type in ("application/json; charset=utf-8", "application/vnd.avtomatika+json"):
        status, body = await api.call(
            "POST", "/api/v1/jobs/simple", data='{"n": 1}', headers={"Content-Type": content_type}
        )
        assert status == 202, (content_type, body)


async def test_an_operation_without_a_body_needs_no_content_type(make_api: MakeApi) -> None:
    api = await make_api()
    job_id = await api.create("/api/v1/jobs/approval")
    async with api.http.post(f"/api/v1/jobs/{job_id}/cancel") as response:
        assert response.status == 200, await response.text()


# -- browsers --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of this host is another origin
    ],
)
async def test_cross_origin_requests_are_refused(make_api: MakeApi, headers: dict[str, str]) -> None:
    api = await make_api()
    status, body = await api.call("POST", "/api/v1/jobs/simple", json=JOB, headers=headers)
    assert status == 403, body
    assert "CORS_ALLOW_ORIGINS" in body["error"]
    status, body = await api.call("POST", "/_worker/workers/register", json=WORKER, headers=headers)
    assert status == 403, body
    await nothing_created(api.engine)


async def test_same_origin_requests_are_served(make_api: MakeApi) -> None:
    api = await make_api()
    origin = str(api.http.make_url("/")).rstrip("/")
    headers = {"Origin": origin, "Sec-Fetch-Site": "same-origin"}
    status, body = await api.call("POST", "/api/v1/jobs/simple", json=JOB, headers=headers)
    assert status == 202, body


async def test_no_cors_headers_unless_configured(make_api: MakeApi) -> None:
    api = await make_api()
    await api.call("POST", "/api/v1/jobs/simple", json=JOB)
    await api.call(
        "OPTIONS",
        "/api/v1/jobs/simple",
        headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
    )
    await api.call("GET", "/api/v1/jobs/nope", headers={"Origin": "http://app.example"})
    for answer in api.responses:
        assert "access-control-" not in answer.lower(), answer


async def test_configured_origins_get_cors_headers(make_api: MakeApi) -> None:
    api = await make_api(CORS_ALLOW_ORIGINS="http://app.example, http://other.example")
    origin = {"Origin": "http://app.example"}
    async with api.http.options(
        "/api/v1/jobs/simple",
        headers={**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
    ) as preflight:
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "http://app.example"
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]
    async with api.http.post("/api/v1/jobs/simple", json=JOB, headers=origin) as created:
        assert created.status == 202
        assert created.headers["Access-Control-Allow-Origin"] == "http://app.example"
        assert "Origin" in created.headers["Vary"]
    async with api.http.get("/api/v1/jobs/unknown", headers=origin) as missing:  # errors readable too
        assert missing.status == 404
        assert missing.headers["Access-Control-Allow-Origin"] == "http://app.example"
    status, body = await api.call("POST", "/api/v1/jobs/simple", json=JOB, headers={"Origin": "http://evil.example"})
    assert status == 403, body
