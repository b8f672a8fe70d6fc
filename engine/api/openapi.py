"""The OpenAPI 3.1 document of the client, worker and public API, generated from the running app.

Every route of the application is walked (``app.router``); each handler carries an
:class:`~.routes.Operation` (declared with its route, see :mod:`.routes`) naming its request model,
its query parameters and the pydantic models of its answers (engine/api/payloads.py); its
description is the handler's docstring. Schemas come from those models, so nothing is written twice.
A blueprint's endpoint is one path whose body is the blueprint's ``input_model`` when it has one.
Served at ``GET /_public/openapi.json``; ``GET /_public/docs`` renders it as plain HTML.
"""

from __future__ import annotations

import html
import inspect
import json
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from .app_keys import engine_key
from .payloads import (
    ErrorBody,
)
from .render import json_response
from .routes import Operation, Routes

PREFIX = "/_public"
CLIENT_SCHEME = "ClientToken"
WORKER_SCHEME = "WorkerToken"
REF = "#/components/schemas/{model}"

#: The error statuses every operation may answer, besides those it lists: limits and bad requests.
COMMON_ERRORS: dict[int, str] = {
    400: "Bad request: invalid JSON, a body or parameter the models refuse (``field`` names it)",
    413: "Request body, params or data too large (``field`` names which)",
    429: "Rate or concurrency limit reached; see the ``Retry-After`` header",
}
SECURED_ERRORS: dict[int, str] = {401: "Missing or unknown token"}
routes = Routes("public")


def operation_of(handler: Any) -> Operation | None:
    found = getattr(handler, "openapi", None)
    return found if isinstance(found, Operation) else None


# -- the document ----------------------------------------------------------------------------------
#: Where the API lives; other routes of the application (the studio's) are not part of the document.
API_PREFIXES = ("/api/", "/_worker/", "/_public/")


def _routes(app: web.Application) -> Iterable[tuple[str, str, Any]]:
    """(method, path template, handler) of every API route of ``app`` (not the studio's)."""
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            continue
        path = resource.canonical
        if not path.startswith(API_PREFIXES):
            continue
        for route in resource:
            if route.method in ("HEAD", "*"):
                continue
            yield route.method, path, route.handler


def undocumented_routes(app: web.Application) -> list[str]:
    """Routes of ``app`` without an :class:`Operation`: the tests require this to be empty."""
    return [f"{m} {p}" for m, p, h in _routes(app) if operation_of(h) is None]


#: The document's tags, in the order a reader meets them.
TAGS: list[dict[str, str]] = [
    {"name": "jobs", "description": "Create jobs on blueprint endpoints"},
    {"name": "client", "description": "Read and operate on your jobs (X-Avtomatika-Token)"},
    {
        "name": "breakpoints",
        "description": "Hold jobs before a state's handler runs; continue or step them (operators; "
        "a client with a token, on its own jobs)",
    },
    {
        "name": "bulk",
        "description": "One operation on many jobs at a capped rate, followed and cancellable",
    },
    {"name": "worker", "description": "Workers: register, heartbeat, take tasks, post results"},
    {"name": "public", "description": "Status, health, metrics, approval webhook, this document"},
]


#: How callers authenticate: a client's token, or a worker's.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    CLIENT_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Avtomatika-Token",
        "description": "A client token (CLIENT_TOKEN or the clients TOML file)",
    },
    WORKER_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Worker-Token",
        "description": "A worker's own token (workers TOML file) or GLOBAL_WORKER_TOKEN",
    },
}


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes."""
    engine = app[engine_key]
    models: dict[tuple[type[BaseModel], str], None] = {}
    operations: list[tuple[str, str, Operation, Any]] = []
    for method, path, handler in _routes(app):
        operation = operation_of(handler)
        if operation is None:
            raise ValueError(f"{method} {path} has no OpenAPI operation: declare it in a Routes table (api/routes.py)")
        operations.append((method, path, operation, handler))
        body = _body_model(operation, handler)
        if body is not None:
            models[(body, "validation")] = None
        for answer in operation.responses.values():
            if isinstance(answer, type):
                models[(answer, "serialization")] = None
    models[(ErrorBody, "serialization")] = None
    refs, schemas = models_json_schema(list(models), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for method, path, operation, handler in operations:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, operation, handler, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Avtomatika",
            "version": __version__,
            "description": (
                "The client, worker and public HTTP API of an Avtomatika engine. Errors are JSON "
                '``{"error", "field"?, "details"?}``. Blueprints served: '
                + (", ".join(sorted(engine.blueprints)) or "none")
                + "."
            ),
        },
        "tags": TAGS,
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def _body_model(operation: Operation, handler: Any) -> type[BaseModel] | None:
    blueprint = getattr(handler, "blueprint", None)
    if blueprint is not None:
        model = blueprint.input_model
        return model if isinstance(model, type) and issubclass(model, BaseModel) else None
    return operation.body


def _schema(refs: dict[tuple[type[BaseModel], str], Any], model: type[BaseModel], mode: str) -> dict[str, Any]:
    return dict(refs[(model, mode)])


def _operation(method: str, path: str, operation: Operation, handler: Any, refs: dict[Any, Any]) -> dict[str, Any]:
    blueprint = getattr(handler, "blueprint", None)
    summary = operation.summary
    description = _description(handler)
    if blueprint is not None:
        summary = f"Create a {blueprint.name} job"
        description = (blueprint.description + "\n\n" if blueprint.description else "") + description
    result: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": summary,
        "tags": [operation.tag],
    }
    if description:
        result["description"] = description
    if operation.security == "client":
        result["security"] = [{CLIENT_SCHEME: []}]
    elif operation.security == "worker":
        result["security"] = [{WORKER_SCHEME: []}]
    else:
        result["security"] = []
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in _path_names(path)
    ]
    parameters += [
        {"name": q.name, "in": "query", "required": False, "schema": q.schema, "description": q.description}
        for q in operation.query
    ]
    if parameters:
        result["parameters"] = parameters
    body = _body_model(operation, handler)
    if body is not None:
        schema = _schema(refs, body, "validation")
    elif blueprint is not None:
        schema = {"type": "object", "additionalProperties": True, "description": "The job's initial_data"}
    else:
        schema = None
    if schema is not None:
        result["requestBody"] = {
            "required": operation.body_required,
            "description": operation.body_description or ("The job's initial_data" if blueprint else ""),
            "content": {"application/json": {"schema": schema}},
        }
    result["responses"] = _responses(operation, refs)
    return result


def _description(handler: Any) -> str:
    """The handler's docstring, each paragraph on one line."""
    paragraphs = (inspect.getdoc(handler) or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs).strip()


def _responses(operation: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, answer in sorted(operation.responses.items()):
        if answer is None:
            responses[str(status)] = {"description": _reason(status)}
        elif isinstance(answer, dict):
            responses[str(status)] = {
                "description": "; ".join(answer.values()),
                "content": {
                    kind: {"schema": {"type": "object"} if kind == "application/json" else {"type": "string"}}
                    for kind in answer
                },
            }
        else:
            responses[str(status)] = {
                "description": (answer.__doc__ or _reason(status)).strip().splitlines()[0],
                "content": {"application/json": {"schema": _schema(refs, answer, "serialization")}},
            }
    errors = {**COMMON_ERRORS, **(SECURED_ERRORS if operation.security else {}), **operation.errors}
    error = {"application/json": {"schema": _schema(refs, ErrorBody, "serialization")}}
    for status, text in sorted(errors.items()):
        entry: dict[str, Any] = {"description": text, "content": error}
        if status == 429:
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}
        responses.setdefault(str(status), entry)
    return responses


def _reason(status: int) -> str:
    return {101: "Switching to the WebSocket protocol", 204: "No content"}.get(status, "OK")


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


def _operation_id(method: str, path: str) -> str:
    words = [p.strip("{}").replace("-", "_").replace(".", "_") for p in path.split("/") if p]
    return method.lower() + "_" + "_".join(w for w in words if w)


# -- serving it ------------------------------------------------------------------------------------
@routes.get(
    f"{PREFIX}/openapi.json",
    Operation("This OpenAPI document", {200: {"application/json": "The OpenAPI 3.1 document"}}),
)
async def openapi_json(request: web.Request) -> web.Response:
    document = _cached(request.app)
    return json_response(document)


def _cached(app: web.Application) -> dict[str, Any]:
    cache = app[_document_key]
    if "document" in cache:
        return cache["document"]  # type: ignore[no-any-return]
    document = build_document(app)
    if app.frozen:  # routes cannot change any more
        cache["document"] = document
    return document


_document_key = web.AppKey("openapi_document", dict)


@routes.get(
    f"{PREFIX}/docs", Operation("The API documentation as an HTML page", {200: {"text/html": "The documentation page"}})
)
async def docs(request: web.Request) -> web.Response:
    return web.Response(text=render_docs(_cached(request.app)), content_type="text/html")


def render_docs(document: dict[str, Any]) -> str:
    """A self-contained HTML page listing every path, method, parameter and schema (no scripts)."""
    e = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(document['info']['title'])} API</title>",
        "<style>body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em}"
        "h2{border-bottom:1px solid #ccc}code,pre{font:13px ui-monospace,monospace;background:#f5f5f5}"
        "pre{padding:.6em;overflow:auto;max-height:30em}.m{font-weight:bold;text-transform:uppercase;"
        "display:inline-block;min-width:4.5em}table{border-collapse:collapse}td,th{padding:2px 8px;"
        "border:1px solid #ddd;text-align:left;vertical-align:top}</style></head><body>",
        f"<h1>{e(document['info']['title'])} API <small>{e(document['info']['version'])}</small></h1>",
        f"<p>{e(document['info'].get('description', ''))}</p>",
        f"<p>Machine-readable: <a href='{PREFIX}/openapi.json'>{PREFIX}/openapi.json</a> (OpenAPI "
        f"{e(document['openapi'])}).</p><h2>Authentication</h2><ul>",
    ]
    for name, scheme in document["components"]["securitySchemes"].items():
        parts.append(f"<li><b>{e(name)}</b>: header <code>{e(scheme['name'])}</code>: {e(scheme['description'])}</li>")
    parts.append("</ul><h2>Operations</h2>")
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            parts.append(_render_operation(path, method, op))
    parts.append("<h2>Schemas</h2>")
    for name, schema in document["components"]["schemas"].items():
        parts.append(f"<h3 id='schema-{e(name)}'>{e(name)}</h3><pre>{e(json.dumps(schema, indent=2))}</pre>")
    parts.append("</body></html>")
    return "".join(parts)


def _render_operation(path: str, method: str, op: dict[str, Any]) -> str:
    e = html.escape
    security = ", ".join(name for item in op.get("security", []) for name in item) or "none"
    out = [
        f"<h3 id='{e(op['operationId'])}'><span class='m'>{e(method)}</span> <code>{e(path)}</code></h3>",
        f"<p>{e(op['summary'])}</p>",
    ]
    if op.get("description"):
        out.append(f"<p>{e(op['description'])}</p>")
    out.append(f"<p>Authentication: {e(security)}</p>")
    if op.get("parameters"):
        out.append("<table><tr><th>parameter</th><th>in</th><th>schema</th><th></th></tr>")
        for p in op["parameters"]:
            out.append(
                f"<tr><td><code>{e(p['name'])}</code></td><td>{e(p['in'])}</td>"
                f"<td><code>{e(json.dumps(p['schema']))}</code></td><td>{e(p.get('description', ''))}</td></tr>"
            )
        out.append("</table>")
    if "requestBody" in op:
        body = op["requestBody"]
        schema = body["content"]["application/json"]["schema"]
        required = "required" if body.get("required") else "optional"
        out.append(f"<p>Body ({required}, JSON): {_schema_link(schema)}</p>")
    out.append("<table><tr><th>status</th><th>answer</th></tr>")
    for status, answer in op["responses"].items():
        kinds = answer.get("content", {})
        shown = ", ".join(
            _schema_link(v["schema"]) if k == "application/json" else f"<code>{e(k)}</code>" for k, v in kinds.items()
        )
        out.append(f"<tr><td>{e(status)}</td><td>{e(answer['description'])} {shown}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _schema_link(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return f"<a href='#schema-{html.escape(name)}'><code>{html.escape(name)}</code></a>"
    return f"<code>{html.escape(json.dumps(schema))}</code>"


def setup_openapi_routes(app: web.Application) -> None:
    app[_document_key] = {}
    routes.add_to(app)
