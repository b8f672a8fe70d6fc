"""Unknown blueprint endpoints and deep pages: 4xx JSON or the right rows, never a 5xx."""

from __future__ import annotations

import pytest
from support.api import MakeApi


@pytest.mark.parametrize("path", ["/api/v1/jobs/not-a-blueprint", "/api/jobs/not-a-blueprint", "/api/beta/jobs/x"])
async def test_posting_to_an_unknown_blueprint_is_404_naming_it(make_api: MakeApi, path: str) -> None:
    api = await make_api()
    status, body = await api.client("POST", path, json={"n": 1})
    assert status == 404, body
    assert path in body["error"]
    assert await api.engine.list_jobs() == []


async def test_offsets_page_to_the_documented_depth(make_api: MakeApi) -> None:
    api = await make_api(EXECUTOR_CONCURRENCY=1)
    created = [(await api.engine.create_job("simple", {"i": i})).id for i in range(1205)]
    newest_first = created[::-1]
    for offset, limit in ((0, 7), (951, 50), (1000, 200), (1190, 100), (1205, 5), (10_000, 500)):
        status, body = await api.client("GET", f"/api/v1/jobs?offset={offset}&limit={limit}")
        assert status == 200, (offset, body)
        assert [job["id"] for job in body["jobs"]] == newest_first[offset : offset + limit], offset
        assert (body["next_cursor"] is None) == (offset + limit >= len(created)), offset
    # The cursor of an offset page goes on from there.
    status, body = await api.client("GET", "/api/v1/jobs?offset=990&limit=10")
    status, following = await api.client("GET", f"/api/v1/jobs?cursor={body['next_cursor']}&limit=20")
    assert [job["id"] for job in following["jobs"]] == newest_first[1000:1020]
    # An offset after a cursor counts from the cursor.
    status, skipped = await api.client("GET", f"/api/v1/jobs?cursor={body['next_cursor']}&offset=5&limit=3")
    assert [job["id"] for job in skipped["jobs"]] == newest_first[1005:1008]


@pytest.mark.parametrize("query", ["offset=10001", "offset=-1", "offset=x", "limit=0", "limit=501"])
async def test_out_of_range_paging_is_400_naming_the_limit(make_api: MakeApi, query: str) -> None:
    api = await make_api()
    status, body = await api.client("GET", f"/api/v1/jobs?{query}")
    assert status == 400, body
    assert body["field"] == query.split("=")[0]
