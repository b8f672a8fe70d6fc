"""Studio actions and access: CSRF on every POST, viewers refused, sign-in, loopback only, actors recorded."""

from __future__ import annotations

import pytest
from aiohttp import web
from support.engine import FakeWorker, failure, wait_for_status
from support.studio import CLIENTS_TOML, csrf_of, sign_in, studio_app, studio_engine

from avtomatika.api.exposure import is_loopback
from avtomatika.events import EventKind

HX = {"HX-Request": "true"}


async def test_post_without_csrf_is_refused(aiohttp_client) -> None:
    async with studio_engine() as engine:
        job = await engine.create_job("studio_echo", {})
        client = await aiohttp_client(studio_app(engine))
        await csrf_of(client)  # a session exists, but the POST does not carry its token
        response = await client.post(f"/studio/jobs/{job.id}/cancel", data={})
        assert response.status == 403
        assert "CSRF" in await response.text()
        wrong = await client.post(f"/studio/jobs/{job.id}/cancel", data={"csrf_token": "forged"})
        assert wrong.status == 403
        assert (await engine.get_job(job.id)).status != "cancelled"


async def test_cancel_with_csrf_records_the_operator(aiohttp_client) -> None:
    async with studio_engine() as engine:
        seen = []
        engine.events.subscribe(lambda e: seen.append(e) if e.kind == EventKind.JOB_CANCELLED else None)
        job = await engine.create_job("studio_echo", {})
        client = await aiohttp_client(studio_app(engine))
        token = await csrf_of(client)
        response = await client.post(f"/studio/jobs/{job.id}/cancel", headers={**HX, "X-CSRF-Token": token})
        assert response.status == 200
        assert "Cancelled job" in await response.text()
        assert (await engine.get_job(job.id)).status == "cancelled"
        assert seen[0].data["actor"] == "operator:local"


async def test_start_job_from_the_model_form_with_inline_errors(aiohttp_client) -> None:
    async with studio_engine() as engine:
        client = await aiohttp_client(studio_app(engine))
        token = await csrf_of(client)
        bad = await client.post(
            "/studio/blueprints/studio_clip/jobs",
            data={"csrf_token": token, "url": "", "bitrate_kbps": "fast", "codec": "h264"},
            headers=HX,
        )
        text = await bad.text()
        assert bad.status == 422
        assert text.startswith('<form id="start-form"')
        assert "valid integer" in text
        assert "Field required" in text
        good = await client.post(
            "/studio/blueprints/studio_clip/jobs",
            data={"csrf_token": token, "url": "s3://x", "bitrate_kbps": "800", "codec": "av1", "hdr": "on"},
            headers=HX,
        )
        assert good.status == 204
        assert good.headers["HX-Redirect"].startswith("/studio/jobs/")
        job = await engine.get_job(good.headers["HX-Redirect"].rsplit("/", 1)[1])
        assert job.initial_data == {"url": "s3://x", "bitrate_kbps": 800, "codec": "av1", "hdr": True}


async def test_start_job_from_json_shows_syntax_errors(aiohttp_client) -> None:
    async with studio_engine() as engine:
        client = await aiohttp_client(studio_app(engine))
        token = await csrf_of(client)
        bad = await client.post(
            "/studio/blueprints/studio_echo/jobs", data={"csrf_token": token, "initial_data": '{"a": 1,}'}, headers=HX
        )
        assert bad.status == 422
        assert "not valid JSON: trailing comma is not allowed: line 1" in await bad.text()
        plain = await client.post(
            "/studio/blueprints/studio_echo/jobs",
            data={"csrf_token": token, "initial_data": '{"a": 1}'},
            allow_redirects=False,
        )
        assert plain.status == 303
        assert plain.headers["Location"].startswith("/studio/jobs/")


async def test_quarantine_release_with_edited_params_and_bulk_fail(aiohttp_client) -> None:
    async with studio_engine() as engine, FakeWorker(engine, "w1", ["echo"]) as worker:
        first = await engine.create_job("studio_echo", {"outcome": "permanent"})
        second = await engine.create_job("studio_echo", {"outcome": "permanent"})
        for _ in range(2):
            await worker.run_one(failure("PERMANENT_ERROR", "bad codec"))
        await wait_for_status(engine, first.id, "quarantined")
        await wait_for_status(engine, second.id, "quarantined")
        client = await aiohttp_client(studio_app(engine))
        page = await (await client.get("/studio/quarantine")).text()
        assert f'id="q-{first.id}"' in page
        assert "PERMANENT_ERROR: bad codec" in page
        token = await csrf_of(client, "/studio/quarantine")
        released = await client.post(
            f"/studio/jobs/{first.id}/release",
            data={"csrf_token": token, "params": '{"outcome": "success"}'},
            headers=HX,
        )
        assert released.status == 200, await released.text()
        task = await worker.take()
        assert task.params["outcome"] == "success"
        bulk = await client.post(
            "/studio/bulk", data={"csrf_token": token, "action": "fail", "job_id": [second.id]}, headers=HX
        )
        assert bulk.status == 200
        assert "Fail · 1 job" in await bulk.text()
        await wait_for_status(engine, second.id, "failed")


async def test_retry_a_failed_job_from_a_chosen_state(aiohttp_client) -> None:
    async with studio_engine() as engine, FakeWorker(engine, "w1", ["echo"]) as worker:
        job = await engine.create_job("studio_echo", {"fail_first": True})
        await worker.run_one(failure("INVALID_INPUT_ERROR", "nope"))
        await wait_for_status(engine, job.id, "failed")
        client = await aiohttp_client(studio_app(engine))
        page = await (await client.get(f"/studio/jobs/{job.id}")).text()
        assert 'data-action="retry"' in page
        assert 'data-action="cancel"' not in page
        token = await csrf_of(client)
        response = await client.post(
            f"/studio/jobs/{job.id}/retry", data={"csrf_token": token, "from_state": "start"}, headers=HX
        )
        assert response.status == 200
        assert "from start" in await response.text()
        await worker.run_one()
        await wait_for_status(engine, job.id, "finished")


async def test_invalid_operation_is_a_409_for_flash(aiohttp_client) -> None:
    async with studio_engine() as engine:
        job = await engine.create_job("studio_echo", {})
        client = await aiohttp_client(studio_app(engine))
        token = await csrf_of(client)
        response = await client.post(f"/studio/jobs/{job.id}/release", headers={**HX, "X-CSRF-Token": token})
        assert response.status == 409
        assert response.headers["HX-Retarget"] == "#flash"


async def test_token_mode_asks_to_sign_in_and_viewers_are_read_only(aiohttp_client) -> None:
    async with studio_engine(STUDIO_TOKEN="op-secret", STUDIO_VIEWER_TOKEN="view-secret") as engine:
        job = await engine.create_job("studio_echo", {})
        client = await aiohttp_client(studio_app(engine))
        first = await client.get("/studio/jobs", allow_redirects=False)
        assert first.status == 303
        assert first.headers["Location"].startswith("/studio/login")
        assert (await client.get("/studio/jobs?format=json")).status == 401
        token = await csrf_of(client, "/studio/login")
        wrong = await client.post("/studio/login", data={"csrf_token": token, "token": "nope"})
        assert wrong.status == 401
        viewer = await client.post(
            "/studio/login", data={"csrf_token": token, "token": "view-secret", "name": "vera", "next": "/studio/jobs"}
        )
        assert viewer.status == 200
        assert str(viewer.url).endswith("/studio/jobs")
        page = await (await client.get(f"/studio/jobs/{job.id}")).text()
        assert "read-only" in page
        assert 'data-action="cancel"' not in page
        viewer_csrf = await csrf_of(client, f"/studio/jobs/{job.id}")
        refused = await client.post(f"/studio/jobs/{job.id}/cancel", data={"csrf_token": viewer_csrf})
        assert refused.status == 403
        assert "read-only" in await refused.text()


async def test_operator_sign_in_can_act(aiohttp_client) -> None:
    async with studio_engine(STUDIO_TOKEN="op-secret") as engine:
        job = await engine.create_job("studio_echo", {})
        client = await aiohttp_client(studio_app(engine))
        token = await csrf_of(client, "/studio/login")
        await client.post("/studio/login", data={"csrf_token": token, "token": "op-secret", "name": "olga"})
        csrf = await csrf_of(client, f"/studio/jobs/{job.id}")
        response = await client.post(f"/studio/jobs/{job.id}/cancel", data={"csrf_token": csrf}, headers=HX)
        assert response.status == 200
        assert (await engine.get_job(job.id)).error == "cancelled by operator:olga"


@web.middleware
async def from_afar(request: web.Request, handler) -> web.StreamResponse:
    return await handler(request.clone(remote="203.0.113.9"))


async def test_without_a_token_only_loopback_is_served(aiohttp_client) -> None:
    async with studio_engine() as engine:
        app = web.Application(middlewares=[from_afar])
        from avtomatika.studio import setup_studio

        setup_studio(app, engine)
        client = await aiohttp_client(app)
        response = await client.get("/studio/blueprints")
        assert response.status == 403
        assert "loopback only" in await response.text()


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        (None, False),
    ],
)
def test_is_loopback(remote: str | None, expected: bool) -> None:
    assert is_loopback(remote) is expected


async def test_client_tokens_alone_still_ask_for_a_token(aiohttp_client, tmp_path) -> None:
    (tmp_path / "clients.toml").write_text(CLIENTS_TOML)
    async with studio_engine(CLIENTS_CONFIG_PATH=str(tmp_path / "clients.toml")) as engine:
        client = await aiohttp_client(studio_app(engine))
        first = await client.get("/studio/jobs", allow_redirects=False)
        assert first.status == 303, "with client tokens the studio is not open on loopback"
        assert first.headers["Location"].startswith("/studio/login")
        csrf = await csrf_of(client, "/studio/login")
        wrong = await client.post("/studio/login", data={"csrf_token": csrf, "token": "STUDIO_TOKEN?"})
        assert wrong.status == 401


async def test_a_client_session_sees_and_acts_on_its_own_jobs_only(aiohttp_client, tmp_path) -> None:
    (tmp_path / "clients.toml").write_text(CLIENTS_TOML)
    settings = {"CLIENTS_CONFIG_PATH": str(tmp_path / "clients.toml"), "STUDIO_TOKEN": "op-secret"}
    async with studio_engine(**settings) as engine, FakeWorker(engine, "w1", ["echo"]) as worker:
        mine = await engine.create_job("studio_echo", {"outcome": "permanent"}, client="acme")
        theirs = await engine.create_job("studio_echo", {"outcome": "permanent"}, client="globex")
        for _ in range(2):
            await worker.run_one(failure("PERMANENT_ERROR", "bad codec"))
        await wait_for_status(engine, mine.id, "quarantined")
        await wait_for_status(engine, theirs.id, "quarantined")
        operators = await engine.create_job("studio_echo", {})

        acme = await aiohttp_client(studio_app(engine))
        await sign_in(acme, "acme-secret", "ann")
        listed = await (await acme.get("/studio/jobs?format=json")).json()
        assert [job["id"] for job in listed["jobs"]] == [mine.id]
        page = await (await acme.get("/studio/jobs")).text()
        assert mine.id in page
        assert theirs.id not in page
        assert (await acme.get(f"/studio/jobs/{mine.id}")).status == 200
        for path in (f"/studio/jobs/{theirs.id}", f"/studio/jobs/{operators.id}", f"/studio/live/jobs/{theirs.id}"):
            assert (await acme.get(path)).status == 404, path
        quarantine = await (await acme.get("/studio/quarantine?format=json")).json()
        assert [job["id"] for job in quarantine["jobs"]] == [mine.id]
        assert theirs.id not in await (await acme.get("/studio/quarantine")).text()
        blueprints = await (await acme.get("/studio/blueprints?format=json")).json()
        echo = next(b for b in blueprints["blueprints"] if b["name"] == "studio_echo")
        assert sum(echo["counts"].values()) == 1, "counts on the graph are the client's own jobs"

        csrf = await csrf_of(acme, f"/studio/jobs/{mine.id}")
        refused = await acme.post(f"/studio/jobs/{theirs.id}/fail", data={"csrf_token": csrf}, headers=HX)
        assert refused.status == 404
        bulk = await acme.post(
            "/studio/bulk", data={"csrf_token": csrf, "action": "fail", "job_id": [theirs.id]}, headers=HX
        )
        assert "Nothing selected" in await bulk.text()
        assert (await engine.get_job(theirs.id)).status == "quarantined"
        failed = await acme.post(f"/studio/jobs/{mine.id}/fail", data={"csrf_token": csrf}, headers=HX)
        assert failed.status == 200, await failed.text()
        assert (await engine.get_job(mine.id)).status == "failed"

        started = await acme.post(
            "/studio/blueprints/studio_echo/jobs",
            data={"csrf_token": csrf, "initial_data": '{"a": 1}'},
            allow_redirects=False,
        )
        assert started.status == 303
        new_id = started.headers["Location"].rsplit("/", 1)[1]
        assert (await engine.get_job(new_id)).client == "acme", "a client starts jobs it owns"
        await engine.history_writer.flush()
        created = (await engine.job_history(new_id))[0]
        assert created.data["actor"] == "client:acme"

        operator = await aiohttp_client(studio_app(engine))
        await sign_in(operator, "op-secret", "olga")
        everything = await (await operator.get("/studio/jobs?format=json")).json()
        assert {mine.id, theirs.id, operators.id, new_id} <= {job["id"] for job in everything["jobs"]}
        assert (await operator.get(f"/studio/jobs/{theirs.id}")).status == 200
        held = await (await operator.get("/studio/quarantine?format=json")).json()
        assert [job["id"] for job in held["jobs"]] == [theirs.id]
