"""The studio goes through the API's limits: one JSON parser, sizes, quotas, rates; sign-in rate limited.

The studio is served with the API from one application (as the engine serves them), over real HTTP.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from support.api import Api, MakeApi
from support.studio import csrf_of

HX = {"HX-Request": "true"}
JSON = {"Accept": "application/json"}


async def sign_in(api: Api, token: str) -> str:
    """Sign the test client in; the CSRF token of its new session."""
    csrf = await csrf_of(api.http, "/studio/login")
    response = await api.http.post("/studio/login", data={"csrf_token": csrf, "token": token, "name": "ann"})
    assert response.status == 200, await response.text()
    return await csrf_of(api.http)


async def start(api: Api, csrf: str, text: str | dict[str, str], blueprint: str = "simple") -> tuple[int, Any]:
    """Post the start form: the JSON editor's text, or the fields of a typed blueprint's form."""
    fields = {"initial_data": text} if isinstance(text, str) else text
    response = await api.http.post(
        f"/studio/blueprints/{blueprint}/jobs", data={"csrf_token": csrf, **fields}, headers=JSON
    )
    return response.status, await response.json()


def clients_file(tmp_path: Path, **quota: int) -> str:
    path = tmp_path / "clients.toml"
    lines = ['[acme]\ntoken = "acme-secret"']
    lines += [f"monthly_attempts = {n}" for n in quota.values()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# -- one parser --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ('{"x": 123456789012345678901234567890}', True),  # beyond 64 bits: read as a float, by both
        ('{"x": "\\ud800"}', False),  # a lone surrogate
        ("[" * 100_000, False),  # nesting far past MAX_JSON_DEPTH
        ('{"x": 1e400}', False),  # beyond a double
        ('{"x": NaN}', False),
    ],
    ids=["big-int", "lone-surrogate", "deep", "huge-float", "nan"],
)
async def test_the_studio_and_the_api_accept_and_refuse_the_same_json(
    make_api: MakeApi, text: str, accepted: bool
) -> None:
    api = await make_api(studio=True)
    csrf = await csrf_of(api.http)
    status, body = await start(api, csrf, text)
    api_status, api_body = await api.call("POST", "/api/v1/jobs/simple", data=text)
    if accepted:
        assert status == 201, body
        assert api_status == 202, api_body
        studio_job = await api.job(body["id"])
        assert studio_job["initial_data"] == (await api.job(api_body["job_id"]))["initial_data"]
    else:
        assert status == 422, body
        assert api_status == 400, api_body
        assert len(await api.engine.list_jobs()) == 0


async def test_release_params_go_through_the_same_parser_and_size_limit(make_api: MakeApi) -> None:
    api = await make_api(studio=True, MAX_PARAMS_BYTES=1024)
    job_id, _ = await api.quarantined()
    csrf = await csrf_of(api.http, f"/studio/jobs/{job_id}")
    for params, status in (('{"x": "\\udfff"}', 422), ('{"blob": "' + "z" * 2000 + '"}', 413)):
        response = await api.http.post(
            f"/studio/jobs/{job_id}/release", data={"csrf_token": csrf, "params": params}, headers=JSON
        )
        assert response.status == status, await response.text()
        assert (await api.engine.get_job(job_id)).status == "quarantined"


# -- sizes, quotas, rates ------------------------------------------------------------------------
async def test_initial_data_over_the_size_limit_is_refused_by_the_studio(make_api: MakeApi) -> None:
    api = await make_api(studio=True, MAX_PARAMS_BYTES=1024)
    csrf = await csrf_of(api.http)
    status, body = await start(api, csrf, '{"blob": "' + "z" * 2000 + '"}')
    assert status == 413, body
    assert "initial_data" in body["form"]["errors"]["initial_data"]
    assert await api.engine.list_jobs() == []


async def test_the_studio_counts_a_clients_monthly_attempts(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(studio=True, client_token="acme-secret", CLIENTS_CONFIG_PATH=clients_file(tmp_path, quota=3))
    for _ in range(3):
        await api.create("/api/v1/jobs/simple")
    status, body = await api.client("POST", "/api/v1/jobs/simple", json={})
    assert status == 429, body
    csrf = await sign_in(api, "acme-secret")
    for _ in range(2):
        status, body = await start(api, csrf, "{}")
        assert status == 429, body
        assert "monthly attempts" in body["form"]["errors"]["initial_data"]
    assert len(await api.engine.list_jobs()) == 3


async def test_refused_input_gives_the_attempt_back(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(studio=True, CLIENTS_CONFIG_PATH=clients_file(tmp_path, quota=1))
    csrf = await sign_in(api, "acme-secret")
    status, body = await start(api, csrf, {"item": "book", "quantity": "0"}, blueprint="typed")
    assert status == 422, body  # refused by the input model: no attempt spent
    status, body = await start(api, csrf, {"item": "book", "quantity": "2"}, blueprint="typed")
    assert status == 201, body


async def test_the_studios_actions_are_rate_limited_with_the_clients_api_calls(
    make_api: MakeApi, tmp_path: Path
) -> None:
    api = await make_api(
        studio=True,
        client_token="acme-secret",
        CLIENTS_CONFIG_PATH=clients_file(tmp_path),
        RATE_LIMIT_CLIENT_WRITE_PER_SECOND=0.001,
        RATE_LIMIT_CLIENT_WRITE_BURST=3,
    )
    await api.create("/api/v1/jobs/simple")
    await api.create("/api/v1/jobs/simple")
    csrf = await sign_in(api, "acme-secret")
    status, body = await start(api, csrf, "{}")
    assert status == 201, body
    response = await api.http.post(
        "/studio/blueprints/simple/jobs", data={"csrf_token": csrf, "initial_data": "{}"}, headers=JSON
    )
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert "rate limit" in (await response.json())["error"]
    assert len(await api.engine.list_jobs()) == 3


async def test_an_operators_actions_are_rate_limited_too(make_api: MakeApi) -> None:
    api = await make_api(studio=True, RATE_LIMIT_CLIENT_WRITE_PER_SECOND=0.001, RATE_LIMIT_CLIENT_WRITE_BURST=2)
    csrf = await csrf_of(api.http)
    assert (await start(api, csrf, "{}"))[0] == 201
    assert (await start(api, csrf, "{}"))[0] == 201
    status, body = await start(api, csrf, "{}")
    assert status == 429, body


# -- sign-in -------------------------------------------------------------------------------------
async def test_sign_in_is_rate_limited_per_address_and_logged_once_per_burst(
    make_api: MakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    api = await make_api(studio=True, STUDIO_TOKEN="op-secret", RATE_LIMIT_SIGN_IN_BURST=5)
    csrf = await csrf_of(api.http, "/studio/login")
    statuses = []
    with caplog.at_level(logging.WARNING, logger="avtomatika.studio"):
        for i in range(200):
            response = await api.http.post(
                "/studio/login", data={"csrf_token": csrf, "token": f"guess-{i}"}, allow_redirects=False
            )
            statuses.append(response.status)
    assert statuses[:5] == [401] * 5
    assert set(statuses[5:]) == {429}
    assert "Retry-After" in response.headers
    lines = [r for r in caplog.records if "sign-in" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    # Even the right token waits for the address's bucket.
    refused = await api.http.post(
        "/studio/login", data={"csrf_token": csrf, "token": "op-secret"}, allow_redirects=False
    )
    assert refused.status == 429
