"""The OpenAPI document: generated from the app's routes and pydantic models, served with a docs page."""

from __future__ import annotations

import re

import pytest
from aiohttp import web
from support.blueprints import API_BLUEPRINTS

from avtomatika import Config, OrchestratorEngine
from avtomatika.api.app import create_app
from avtomatika.api.keys import engine_key
from avtomatika.api.openapi import build_document, undocumented_routes
from avtomatika.api.payloads import JobSummary, JobView, TaskWire, WorkerSummary


def _app() -> web.Application:
    engine = OrchestratorEngine(config=Config(LOG_FORMAT="text", CLIENT_TOKEN=None, GLOBAL_WORKER_TOKEN=None))
    for blueprint in API_BLUEPRINTS:
        engine.register_blueprint(blueprint)
    return create_app(engine)


def _routes(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method not in ("HEAD", "*")
        and not isinstance(route.resource, web.PrefixedSubAppResource)
        and route.resource.canonical.startswith(("/api/", "/_worker/", "/_public/"))
    }


def test_the_studio_mounted_beside_the_api_is_left_out():
    from avtomatika.studio import setup_studio

    app = _app()
    setup_studio(app, app[engine_key])
    assert undocumented_routes(app) == []
    outside = {
        route.resource.canonical
        for route in app.router.routes()
        if not isinstance(route.resource, web.PrefixedSubAppResource)
        and not route.resource.canonical.startswith(("/api/", "/_worker/", "/_public/"))
    }
    assert "/studio" in outside
    assert all(path == "/" or path.startswith("/studio") for path in outside), outside
    assert not any(path.startswith("/studio") for path in build_document(app)["paths"])


def test_every_route_is_in_the_document_and_nothing_else():
    app = _app()
    assert undocumented_routes(app) == []
    document = build_document(app)
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == _routes(app)
    assert document["openapi"].startswith("3.")


def test_one_path_per_blueprint_with_its_input_model():
    document = build_document(_app())
    typed = document["paths"]["/api/v1/jobs/typed"]["post"]
    assert typed["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Order"}
    order = document["components"]["schemas"]["Order"]
    assert order["required"] == ["item", "quantity"]
    assert order["properties"]["quantity"]["minimum"] == 1
    plain = document["paths"]["/api/jobs/plain"]["post"]
    assert plain["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"
    assert set(plain["responses"]) >= {"202", "400", "401", "413", "429"}
    for name in ("simple", "work", "approval"):
        assert f"/api/v1/jobs/{name}" in document["paths"]


def test_security_schemes_and_which_operations_need_them():
    document = build_document(_app())
    schemes = document["components"]["securitySchemes"]
    assert schemes["ClientToken"] == {**schemes["ClientToken"], "type": "apiKey", "in": "header"}
    assert schemes["ClientToken"]["name"] == "X-Avtomatika-Token"
    assert schemes["WorkerToken"]["name"] == "X-Worker-Token"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if path.startswith("/api/") or path.startswith("/_public/webhooks/"):
                assert operation["security"] == [{"ClientToken": []}], (method, path)
                assert "401" in operation["responses"]
            elif path.startswith("/_worker/"):
                assert operation["security"] == [{"WorkerToken": []}], (method, path)
            else:
                assert operation["security"] == [], (method, path)
            assert "429" in operation["responses"]
            assert "Retry-After" in operation["responses"]["429"]["headers"]


def test_request_bodies_come_from_the_payload_models():
    document = build_document(_app())
    paths = document["paths"]
    body = paths["/_worker/tasks/result"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TaskResult"}
    result = document["components"]["schemas"]["TaskResult"]
    assert set(result["required"]) == {"job_id", "task_id", "worker_id", "result"}
    assert paths["/api/v1/jobs/{job_id}/release"]["post"]["requestBody"]["required"] is False
    assert paths["/_worker/workers/register"]["post"]["requestBody"]["required"] is True
    listing = paths["/api/v1/jobs"]["get"]["parameters"]
    status = next(p for p in listing if p["name"] == "status")
    assert "quarantined" in status["schema"]["enum"]
    assert paths["/_worker/workers/{worker_id}/tasks/next"]["get"]["responses"]["204"] == {"description": "No content"}


async def test_served_without_a_token_and_answers_match_their_models(make_api):
    api = await make_api(client_token="c", worker_token="w", CLIENT_TOKEN="c", GLOBAL_WORKER_TOKEN="w")
    status, document = await api.call("GET", "/_public/openapi.json")
    assert status == 200
    assert document == build_document(api.http.server.app)
    schema_names = set(document["components"]["schemas"])
    assert {"JobView", "JobSummary", "TaskWire", "WorkerView", "ErrorBody"} <= schema_names

    job_id, task = await api.take()
    TaskWire.model_validate(task)
    view = await api.job(job_id)
    assert JobView.model_validate(view).model_dump(mode="json", exclude={"approval"}) == view
    _, listing = await api.client("GET", "/api/v1/jobs")
    assert [JobSummary.model_validate(j).model_dump(mode="json") for j in listing["jobs"]] == listing["jobs"]
    _, workers = await api.client("GET", "/api/v1/workers")  # a client with a token: summaries
    assert WorkerSummary.model_validate(workers["workers"][0]).model_dump() == workers["workers"][0]
    view_schema = document["components"]["schemas"]["JobView"]
    assert set(view) <= set(view_schema["properties"])
    assert "approval" not in view_schema["required"]


async def test_the_docs_page_is_self_contained(make_api):
    api = await make_api()
    async with api.http.get("/_public/docs") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert "/_worker/tasks/result" in page
    assert "/api/v1/jobs/{job_id}/release" in page
    assert "X-Worker-Token" in page
    assert "id='schema-JobView'" in page
    assert "<script" not in page
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", page), "the page must not load anything remote"


@pytest.mark.parametrize("path", ["/_public/openapi.json", "/_public/docs"])
async def test_the_document_routes_change_nothing(make_api, path):
    api = await make_api()
    for method in ("POST", "PUT", "DELETE"):
        status, _ = await api.call(method, path, json={})
        assert status == 405
