"""Every studio route x hostile values (path, query, form; htmx, JSON and plain): never a 5xx.

The API has schemathesis (tests/test_fuzz_api.py); the studio's routes take forms and queries that
no schema describes, so they are enumerated from the router, as the security matrix does, and each
is sent the same hostile values: empty, huge, broken JSON, deep JSON, NUL bytes, numbers out of
range, right-to-left marks, paths that climb. A signed-in operator sends them, with the CSRF token,
so the requests reach the handlers instead of stopping at the sign-in or CSRF checks.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support.studio import csrf_of, studio_app, studio_engine

#: Field and query names the studio reads (and a few it does not).
NAMES = [
    "action",
    "at",
    "blueprint",
    "breakpoint_id",
    "bulk_id",
    "changes",
    "client",
    "condition",
    "cursor",
    "data",
    "error",
    "format",
    "from",
    "from_state",
    "handler",
    "id",
    "initial_data",
    "job",
    "job_ids",
    "last",
    "name",
    "next",
    "once",
    "operation",
    "params",
    "q",
    "rate_per_s",
    "reason",
    "replaces",
    "role",
    "select",
    "seq",
    "since",
    "state",
    "state_history",
    "status",
    "taken",
    "to",
    "token",
    "type",
    "value",
    "visit",
    "created_after",
    "limit",
    "kind",
]
DEEP = '{"a": ' * 200 + "1" + "}" * 200
VALUES = ["", "x" * 70_000, "{", "[]", "null", "1e999", "-1", "9" * 30, "\x00", "%ff", "../../etc", DEEP, "nan",
          "true", '{"x": 1}', "[1,2", "\u00e9\u202e", "0x10"]  # fmt: skip
#: A query line stays under aiohttp's 8 KB request line (longer ones are its own 400).
QUERY_VALUE_CHARS = 600
PATH_FILLS = (
    "real",  # the job, blueprint and state that exist
    "../%00",
    "x" * 1000,
)


def _routes(router: web.UrlDispatcher) -> list[tuple[str, str]]:
    """(method, path template) of every route, sub-applications included, static files and SSE left out."""
    found = []
    for resource in router.resources():
        info = resource.get_info()
        if "app" in info:
            found += _routes(info["app"].router)
            continue
        path = info.get("path") or info.get("formatter") or ""
        if path and "/static" not in path and "/live" not in path:
            found += [(route.method, path) for route in resource if route.method != "HEAD"]
    return found


def _fill(path: str, fill: str, real: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: real.get(m.group(1), "x") if fill == "real" else fill, path)


async def test_no_studio_route_answers_5xx_to_hostile_values() -> None:
    async with studio_engine() as engine:
        job = await engine.create_job("studio_echo", {"text": "hi"})
        real = {"job_id": job.id, "name": "studio_echo", "state": "start"}
        app = studio_app(engine)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            csrf = await csrf_of(client)
            routes = _routes(app.router)
            assert len(routes) > 25, routes  # the studio's pages, partials and operations
            statuses: Counter[int] = Counter()
            failures: list[tuple[Any, ...]] = []
            for method, template in routes:
                for fill in PATH_FILLS:
                    url = _fill(template, fill, real)
                    for n, value in enumerate(VALUES):
                        headers = {"X-CSRF-Token": csrf}
                        if n % 2:
                            headers["HX-Request"] = "true"
                        if n % 3 == 0:
                            headers["Accept"] = "application/json"
                        fields = {name: value for name in NAMES[n % 5 :: 3]}
                        try:
                            if method == "GET":
                                query = {k: v[:QUERY_VALUE_CHARS] for k, v in list(fields.items())[:3]}
                                response = await client.get(url, params=query, headers=headers)
                            else:
                                form = {**fields, "csrf_token": csrf}
                                response = await client.request(method, url, data=form, headers=headers)
                        except aiohttp.ClientResponseError as refused:  # aiohttp's parser: a line too long
                            statuses[refused.status] += 1
                            continue
                        statuses[response.status] += 1
                        if response.status >= 500:
                            failures.append((method, url[:100], n, response.status, (await response.text())[:300]))
                        response.release()
            print(f"{sum(statuses.values())} requests over {len(routes)} routes: {dict(statuses)}")
            assert statuses[200] > 0, statuses  # the handlers were reached
            assert not failures, failures[:10]
        finally:
            await client.close()
