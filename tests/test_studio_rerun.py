"""The studio's rerun: a form filled with the job's data at the state chosen, refused fields named, the
new job's page linking to its origin with the diff of inputs, the origin's to its reruns."""

from __future__ import annotations

import re
from typing import Any

from support.engine import started_engine, wait_for_status
from support.studio import csrf_of, studio_app

from avtomatika import StateMachineBlueprint

HX = {"HX-Request": "true"}
JSON = {"Accept": "application/json"}

convert = StateMachineBlueprint("studio_convert", api_version="v1", api_endpoint="/jobs/studio_convert")


@convert.handler_for("read", is_start=True)
async def convert_read(context: Any) -> None:
    context.state_history["pages"] = len(context.initial_data.get("text", ""))
    context.actions.transition_to("render")


@convert.handler_for("render")
async def convert_render(context: Any) -> None:
    context.state_history["rendered"] = f"{context.initial_data.get('format')}:{context.state_history['pages']}"
    context.actions.transition_to("done")


@convert.handler_for("done", is_end=True)
async def convert_done(context: Any) -> None:
    pass


async def test_rerun_a_finished_job_from_its_second_state_with_an_edit(aiohttp_client) -> None:
    async with started_engine(convert) as engine:
        origin = await engine.create_job("studio_convert", {"text": "abc", "format": "pdf"})
        await wait_for_status(engine, origin.id, "finished")
        client = await aiohttp_client(studio_app(engine))
        token = await csrf_of(client)
        page = await (await client.get(f"/studio/jobs/{origin.id}")).text()
        assert f'href="/studio/jobs/{origin.id}/rerun"' in page

        form = await client.get(f"/studio/jobs/{origin.id}/rerun", params={"state": "render"}, headers=HX)
        text = await form.text()
        assert text.startswith('<form id="rerun-form"')
        assert "The data as the job entered render." in text
        assert re.search(r'<textarea id="rerun-state_history"[^>]*>\{\s*&#34;pages&#34;: 3\s*\}</textarea>', text), text

        twin = await (await client.get(f"/studio/jobs/{origin.id}/rerun?state=render", headers=JSON)).json()
        assert (twin["state"], twin["visit"], twin["state_history"]) == ("render", 1, {"pages": 3})
        assert twin["states"] == [
            {"state": "read", "entered": 1},
            {"state": "render", "entered": 1},
            {"state": "done", "entered": 1},
        ]

        fields = {"csrf_token": token, "state": "render", "initial_data": '{"text": "abc", "format": "png"}'}
        bad = await client.post(
            f"/studio/jobs/{origin.id}/rerun", data={**fields, "state_history": '{"pages": '}, headers=HX
        )
        assert bad.status == 422
        refused = await bad.text()
        assert 'data-field="state_history"' in refused
        assert "state_history is not valid JSON" in refused
        assert "{&#34;pages&#34;: </textarea>" in refused  # what was typed comes back
        assert len(await engine.list_jobs()) == 1

        good = await client.post(
            f"/studio/jobs/{origin.id}/rerun", data={**fields, "state_history": '{"pages": 3}'}, headers=HX
        )
        assert good.status == 204, await good.text()
        new_id = good.headers["HX-Redirect"].rsplit("/", 1)[1]
        rerun = await wait_for_status(engine, new_id, "finished")
        assert rerun.state_history == {"pages": 3, "rendered": "png:3"}

        new_page = await (await client.get(f"/studio/jobs/{new_id}")).text()
        assert f'<a class="mono" href="/studio/jobs/{origin.id}">' in new_page
        diff = re.search(r'data-rerun-diff="initial_data">(.*?)</div>', new_page, re.S).group(1)
        assert "~ format" in diff
        assert '"pdf"</code> → <code class="value">"png"' in diff
        assert 'data-rerun-diff="state_history"' not in new_page  # left as it was
        old_page = await (await client.get(f"/studio/jobs/{origin.id}")).text()
        assert f'<a class="mono" href="/studio/jobs/{new_id}">' in old_page
        twins = await (await client.get(f"/studio/jobs/{new_id}", headers=JSON)).json()
        assert twins["rerun_of"]["job_id"] == origin.id
        assert (await (await client.get(f"/studio/jobs/{origin.id}", headers=JSON)).json())["reruns"][0][
            "rerun_job_id"
        ] == new_id


async def test_a_job_in_flight_is_not_rerun(aiohttp_client) -> None:
    waiting = StateMachineBlueprint("studio_waits", api_version="v1", api_endpoint="/jobs/studio_waits")

    @waiting.handler_for("ask", is_start=True)
    async def ask(context: Any) -> None:
        context.actions.await_human_approval("none", "ok?", {"yes": "end"})

    @waiting.handler_for("end", is_end=True)
    async def end(context: Any) -> None:
        pass

    async with started_engine(waiting) as engine:
        job = await engine.create_job("studio_waits", {})
        await wait_for_status(engine, job.id, "waiting_for_human")
        client = await aiohttp_client(studio_app(engine))
        token = await csrf_of(client)
        page = await (await client.get(f"/studio/jobs/{job.id}")).text()
        assert f"/jobs/{job.id}/rerun" not in page
        form = await (await client.get(f"/studio/jobs/{job.id}/rerun")).text()
        assert "the job is waiting_for_human: cancel it, or wait for it to end, before a rerun" in form
        refused = await client.post(f"/studio/jobs/{job.id}/rerun", data={"csrf_token": token, "state": "ask"})
        assert refused.status == 422
        assert len(await engine.list_jobs()) == 1
