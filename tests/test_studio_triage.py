"""Quarantine triage and bulk actions in the studio: groups by error signature, the review and its
errors by field, bulk actions started, followed and cancelled, selections from the jobs list's filter."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from support.engine import FakeWorker, failure, wait_for, wait_for_status
from support.studio import CLIENTS_TOML, csrf_of, next_event, sign_in, studio_app, studio_engine

from avtomatika import OrchestratorEngine
from avtomatika.events import EventKind
from avtomatika.runtime import bulk
from avtomatika.studio import bulk_form
from avtomatika.studio import quarantine as quarantine_module

HX = {"HX-Request": "true"}
MESSAGES = ("file {n} corrupt", "codec 'av{n}' unknown", "quota of {n} exceeded")


async def quarantine(engine: OrchestratorEngine, n: int, codes: tuple[str, ...] = MESSAGES, **data: Any) -> list[str]:
    """``n`` echo jobs quarantined by PERMANENT_ERRORs, the message of job i from ``codes[i % len]``."""
    ids = []
    async with FakeWorker(engine, "w-quarantine", ["echo"]) as worker:
        for i in range(n):
            job = await engine.create_job("studio_echo", {"i": i, **data})
            await worker.run_one(failure("PERMANENT_ERROR", codes[i % len(codes)].format(n=100 + i)))
            await wait_for_status(engine, job.id, "quarantined")
            ids.append(job.id)
    return ids


def signed_settings(tmp_path: Path) -> dict[str, str]:
    """A studio with an operator token (``op-secret``) and the clients of CLIENTS_TOML (acme...)."""
    (tmp_path / "clients.toml").write_text(CLIENTS_TOML)
    return {"CLIENTS_CONFIG_PATH": str(tmp_path / "clients.toml"), "STUDIO_TOKEN": "op-secret"}


async def post(client: TestClient, path: str, data: dict[str, Any], token: str) -> ClientResponse:
    return await client.post(path, data={"csrf_token": token, **data}, headers=HX)


async def finished(engine: OrchestratorEngine, bulk_id: str) -> Any:
    async def check() -> Any:
        action = await engine.bulk.get(bulk_id)
        return action if action.status != "running" else None

    return await wait_for(check, f"bulk action {bulk_id} to end")


async def test_quarantined_jobs_are_grouped_by_signature_and_the_arrival_is_highlighted(aiohttp_client) -> None:
    async with studio_engine() as engine:
        ids = await quarantine(engine, 7)
        client = await aiohttp_client(studio_app(engine))
        found = await (await client.get("/studio/quarantine?format=json")).json()
        assert found["total"] == 7
        assert [(g["message"], g["count"]) for g in found["groups"]] == [
            ("file <n> corrupt", 3),
            ("codec <value> unknown", 2),
            ("quota of <n> exceeded", 2),
        ]
        assert {g["task_type"] for g in found["groups"]} == {"echo"}
        assert found["groups"][0]["jobs"] == [ids[0], ids[3], ids[6]], "oldest quarantined first"
        assert {j["id"] for j in found["jobs"]} == set(ids)
        page = await (await client.get(f"/studio/quarantine?job={ids[4]}")).text()
        assert page.count('class="group-head"') == 3
        assert f'id="q-{ids[4]}" class="q-row arrived"' in page
        assert "&#34;i&#34;: 4" in page, "the arrived job's held params are in the editor"
        assert 'sse-swap="quarantine-counts"' in page
        assert "data-needs-selection disabled" in page, "nothing selected: the buttons start disabled"


async def test_the_review_names_the_action_and_count_and_refuses_by_field(aiohttp_client) -> None:
    async with studio_engine() as engine:
        ids = await quarantine(engine, 2)
        client = await aiohttp_client(studio_app(engine))
        token = await csrf_of(client, "/studio/quarantine")
        nothing = await post(client, "/studio/bulk/review", {"action": "fail"}, token)
        assert nothing.status == 422
        assert 'data-error-field="job_id"' in await nothing.text()
        bad = await post(
            client, "/studio/bulk/review", {"action": "release-edited", "job_id": ids, "params": '{"a": 1,}'}, token
        )
        assert bad.status == 422
        text = await bad.text()
        assert 'data-error-field="params"' in text
        assert "Params: Params are not valid JSON" in text
        for params, message in (("[1]", "JSON object"), ("", "write the fields to change")):
            refused = await post(
                client, "/studio/bulk/review", {"action": "release-edited", "job_id": ids, "params": params}, token
            )
            assert message in await refused.text()
        for rate in ("fast", "0", "1e9", "nan"):
            slow = await post(
                client, "/studio/bulk/review", {"action": "fail", "job_id": ids, "rate_per_s": rate}, token
            )
            assert slow.status == 422
            assert 'data-error-field="rate_per_s"' in await slow.text()
        unknown = await post(client, "/studio/bulk/review", {"action": "explode", "job_id": ids}, token)
        assert unknown.status == 422
        review = await post(
            client,
            "/studio/bulk/review",
            {"action": "release-edited", "job_id": ids, "params": '{"outcome": "success"}', "rate_per_s": "5"},
            token,
        )
        assert review.status == 200
        text = await review.text()
        assert "Release 2 jobs with edited params?" in text
        assert "+ outcome" in text, "the edit as a diff on the first job's held params"
        as_json = await client.post(
            "/studio/bulk/review",
            data={"csrf_token": token, "action": "retry", "job_ids": " ".join(ids), "from_state": "work"},
            headers={"Accept": "application/json"},
        )
        assert (await as_json.json())["question"] == "Retry 2 jobs from work?"
        assert all(j.status == "quarantined" for j in [await engine.get_job(i) for i in ids]), (
            "a review changes nothing"
        )


async def test_a_bulk_release_with_edited_params_runs_is_followed_and_recorded(aiohttp_client) -> None:
    async with studio_engine() as engine:
        ids = await quarantine(engine, 3)
        client = await aiohttp_client(studio_app(engine))
        token = await csrf_of(client, "/studio/quarantine")
        started = await post(
            client,
            "/studio/bulk",
            {
                "action": "release-edited",
                "job_ids": " ".join(ids),
                "params": '{"outcome": "success"}',
                "rate_per_s": "50",
            },
            token,
        )
        assert started.status == 200, await started.text()
        assert "bulk-started" in started.headers["HX-Trigger"]
        text = await started.text()
        bulk_id = text.split('data-bulk="', 1)[1].split('"', 1)[0]
        action = await finished(engine, bulk_id)
        assert (action.done, action.skipped, action.options) == (3, 0, {"params": {"outcome": "success"}})
        for job_id in ids:
            assert (await engine.get_job(job_id)).status == "waiting_for_worker"
        await engine.history_writer.flush()
        released = [line for line in await engine.job_history(ids[0]) if line.kind == EventKind.JOB_RELEASED]
        assert released[0].data["bulk_id"] == bulk_id
        assert released[0].data["actor"] == "operator:local"
        progress = await (await client.get(f"/studio/bulk/{bulk_id}?format=json")).json()
        assert (progress["status"], progress["done"], progress["total"]) == ("finished", 3, 3)
        fragment = await (await client.get(f"/studio/bulk/{bulk_id}", headers=HX)).text()
        assert fragment.startswith('<article class="panel bulk-progress"')
        assert "every 1s" not in fragment, "a finished action stops polling"
        listed = await (await client.get("/studio/bulk?format=json")).json()
        assert [a["id"] for a in listed["bulk_actions"]] == [bulk_id]
        assert (await client.get("/studio/bulk")).status == 200
        assert (await client.get(f"/studio/bulk/{bulk_id}")).status == 200
        assert (await client.get("/studio/bulk/nope?format=json")).status == 404


async def test_a_slow_bulk_fail_is_cancelled_between_two_jobs(aiohttp_client) -> None:
    async with studio_engine() as engine:
        ids = await quarantine(engine, 4)
        client = await aiohttp_client(studio_app(engine))
        token = await csrf_of(client, "/studio/quarantine")
        started = await client.post(
            "/studio/bulk",
            data={"csrf_token": token, "action": "fail", "job_id": ids, "reason": "bad batch", "rate_per_s": "0.5"},
            allow_redirects=False,
        )
        assert started.status == 303
        bulk_id = started.headers["Location"].rsplit("/", 1)[1]
        running = await (await client.get(f"/studio/bulk/{bulk_id}", headers=HX)).text()
        assert 'hx-trigger="every 1s"' in running
        assert "data-cancel-bulk" in running
        cancelled = await post(client, f"/studio/bulk/{bulk_id}/cancel", {}, token)
        assert 'data-bulk-status="cancelled"' in await cancelled.text()
        action = await engine.bulk.get(bulk_id)
        assert (action.status, action.cancelled_by) == ("cancelled", "operator:local")
        await asyncio.sleep(0.3)
        still = [(await engine.get_job(i)).status for i in ids]
        assert still.count("quarantined") >= 3, still
        failed = [await engine.get_job(i) for i in ids if (await engine.get_job(i)).status == "failed"]
        assert all("bad batch" in (j.error or "") for j in failed)


async def test_the_jobs_list_filters_on_input_and_error_and_selects_by_filter(aiohttp_client, monkeypatch) -> None:
    async with studio_engine() as engine:
        acme = await quarantine(engine, 3, customer="acme")
        other = await quarantine(engine, 1, customer="globex")
        client = await aiohttp_client(studio_app(engine))
        listed = await (await client.get("/studio/jobs?format=json&data=customer%3Dacme")).json()
        assert {j["id"] for j in listed["jobs"]} == set(acme)
        by_error = await (await client.get("/studio/jobs?format=json&error=QUOTA")).json()
        assert [j["id"] for j in by_error["jobs"]] == [acme[2]]
        page = await (await client.get("/studio/jobs?data=customer%3Dacme")).text()
        assert 'form="jobs-bulk"' in page
        assert '<input type="hidden" name="data" value="customer=acme">' in page
        token = await csrf_of(client, "/studio/jobs")
        review = await post(
            client, "/studio/bulk/review", {"action": "cancel", "select": "filter", "data": "customer=acme"}, token
        )
        assert "Cancel 3 jobs?" in await review.text()
        assert other[0] not in await review.text()
        monkeypatch.setattr(bulk_form, "MAX_JOBS", 2)
        above = await post(client, "/studio/bulk/review", {"action": "cancel", "select": "filter"}, token)
        assert above.status == 422
        assert "More than 2 jobs match this filter" in await above.text()
        started = await post(
            client, "/studio/bulk", {"action": "retry", "job_id": acme[:2], "from_state": "start"}, token
        )
        bulk_id = (await started.text()).split('data-bulk="', 1)[1].split('"', 1)[0]
        assert (await finished(engine, bulk_id)).done == 2


async def test_a_client_session_bulk_acts_on_and_sees_its_own(aiohttp_client, tmp_path) -> None:
    async with studio_engine(**signed_settings(tmp_path)) as engine:
        theirs = await quarantine(engine, 1)
        operator = await aiohttp_client(studio_app(engine))
        await sign_in(operator, "op-secret", "olga")
        op_token = await csrf_of(operator, "/studio/quarantine")
        started = await post(operator, "/studio/bulk", {"action": "fail", "job_id": theirs}, op_token)
        bulk_id = (await started.text()).split('data-bulk="', 1)[1].split('"', 1)[0]
        acme = await aiohttp_client(studio_app(engine))
        await sign_in(acme, "acme-secret", "ann")
        token = await csrf_of(acme, "/studio/quarantine")
        refused = await post(acme, "/studio/bulk/review", {"action": "fail", "job_id": theirs}, token)
        assert 'data-error-field="job_id"' in await refused.text(), "another client's job is not selectable"
        assert (await acme.get(f"/studio/bulk/{bulk_id}?format=json")).status == 404
        assert (await (await acme.get("/studio/bulk?format=json")).json())["bulk_actions"] == []


async def test_the_live_stream_sends_counts_not_rows(aiohttp_client) -> None:
    async with studio_engine() as engine:
        ids = await quarantine(engine, 2)
        client = await aiohttp_client(studio_app(engine))
        page = await (await client.get("/studio/quarantine")).text()
        since = page.split("/studio/live/quarantine?since=", 1)[1].split('"', 1)[0]
        async with client.get(f"/studio/live/quarantine?since={since}") as response:
            await next_event(response, "quarantine-counts", 'data-total="2" data-new="0"')
            await quarantine(engine, 1)
            later = await next_event(response, "quarantine-counts", 'data-total="3" data-new="1"')
            assert 'data-n="2"' in later, "the first signature's group counts two"
            assert "q-row" not in later, "no row is sent"
            await engine.fail_job(ids[0], reason="not worth it")
            gone = await next_event(response, "quarantine-counts", 'data-total="2"')
            assert f'data-left="{ids[0]}"' in gone, "its row is dimmed"


async def test_a_group_larger_than_the_table_is_counted_and_taken_whole(aiohttp_client, monkeypatch) -> None:
    monkeypatch.setattr(quarantine_module, "SHOWN_ROWS", 2)
    async with studio_engine() as engine:
        ids = await quarantine(engine, 5, codes=("file {n} corrupt",))
        client = await aiohttp_client(studio_app(engine))
        page = await (await client.get("/studio/quarantine")).text()
        assert page.count('class="q-row') == 2
        key = (await (await client.get("/studio/quarantine?format=json")).json())["groups"][0]["key"]
        assert f'data-group-count="{key}" title="quarantined now with this signature">5<' in page
        assert "2 shown" in page
        assert f'name="signature" value="{key}"' in page
        arrived = await (await client.get(f"/studio/quarantine?job={ids[4]}")).text()
        assert arrived.count('class="q-row') == 3, "the job arrived for is a row, beyond the first"
        token = await csrf_of(client, "/studio/quarantine")
        review = await post(client, "/studio/bulk/review", {"action": "release", "signature": key}, token)
        text = await review.text()
        assert "Release 5 jobs as they are?" in text
        assert all(job_id in text for job_id in ids)


async def test_jobs_from_the_list_are_rerun_as_new_jobs_by_an_operator_only(aiohttp_client, tmp_path) -> None:
    async with studio_engine(**signed_settings(tmp_path)) as engine:
        ids = await quarantine(engine, 2)
        operator = await aiohttp_client(studio_app(engine))
        await sign_in(operator, "op-secret", "olga")
        token = await csrf_of(operator, "/studio/jobs")
        fields = {"action": "rerun", "job_id": ids, "from_state": "work", "rate_per_s": "50"}
        review = await post(operator, "/studio/bulk/review", fields, token)
        assert "Rerun 2 jobs as new jobs from work?" in await review.text()
        started = await post(operator, "/studio/bulk", fields, token)
        bulk_id = (await started.text()).split('data-bulk="', 1)[1].split('"', 1)[0]
        action = await finished(engine, bulk_id)
        assert (action.kind, action.done, action.options) == ("rerun", 2, {"state": "work"})
        for origin in ids:
            assert (await engine.get_job(origin)).status == "quarantined", "the origins are left as they are"
            rerun = await engine.reads.detail(bulk.rerun_id(bulk_id, origin))
            assert (rerun.job.state, rerun.rerun_of["job_id"]) == ("work", origin)

        acme = await aiohttp_client(studio_app(engine))
        await sign_in(acme, "acme-secret", "ann")
        mine = await engine.create_job("studio_echo", {}, client="acme")
        await engine.cancel_job(mine.id)
        client_token = await csrf_of(acme, "/studio/jobs")
        refused = await post(acme, "/studio/bulk/review", {"action": "rerun", "job_id": mine.id}, client_token)
        assert refused.status == 422
        assert "A rerun in bulk is for operators" in await refused.text()


async def test_a_filter_that_cannot_be_read_is_refused_not_left_out(aiohttp_client) -> None:
    """Left out, "all matching this filter" would take every job."""
    async with studio_engine() as engine:
        await quarantine(engine, 2)
        client = await aiohttp_client(studio_app(engine))
        page = await client.get("/studio/jobs?data=customer")
        assert page.status == 400
        assert "Input field: write it as name=value" in await page.text()
        bad_time = await client.get("/studio/jobs?from=yesterday", headers={"Accept": "application/json"})
        assert bad_time.status == 400
        assert "'yesterday' is not a date and time" in (await bad_time.json())["error"]
        token = await csrf_of(client, "/studio/jobs")
        review = await post(
            client, "/studio/bulk/review", {"action": "cancel", "select": "filter", "data": "customer"}, token
        )
        assert review.status == 422
        assert 'data-error-field="select"' in await review.text()
        assert all(job.status == "quarantined" for job in await engine.list_jobs())
