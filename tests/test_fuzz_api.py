"""schemathesis against a live engine for the whole OpenAPI document: no 5xx, every answer matches the spec.

The engine serves on 127.0.0.1 (a real TCP server, in a thread with its own event loop) with client
and worker tokens; every operation of ``/_public/openapi.json`` gets a bounded number of generated
requests, sent with the right tokens so they reach the handlers (refused callers are the security
matrix's business). Then schemathesis' coverage phase sends, for every operation, values at, just
past and far past each bound of its schema (negative and boundary data): none may answer 5xx.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.config import SchemathesisConfig
from support.blueprints import API_BLUEPRINTS

from avtomatika import Config, OrchestratorEngine
from avtomatika.api.app import create_app
from avtomatika.api.openapi import build_document
from avtomatika.storage import MemoryStorage

CLIENT_TOKEN = "fuzz-client-token"
WORKER_TOKEN = "fuzz-worker-token"
MAX_EXAMPLES = 25
HEADERS = {"X-Avtomatika-Token": CLIENT_TOKEN, "X-Worker-Token": WORKER_TOKEN}


class LiveEngine:
    """An engine serving HTTP on 127.0.0.1 from a thread of its own."""

    def __init__(self) -> None:
        config = Config(
            CLIENT_TOKEN=CLIENT_TOKEN,
            GLOBAL_WORKER_TOKEN=WORKER_TOKEN,
            CLIENTS_CONFIG_PATH=None,
            WORKERS_CONFIG_PATH=None,
            STUDIO_ENABLED=False,
            WORKER_POLL_TIMEOUT_SECONDS=0.01,
            MAX_JOB_WAIT_SECONDS=0.01,
            EXECUTOR_CONCURRENCY=2,
            RETRY_BACKOFF_BASE_SECONDS=0.01,
            LOG_LEVEL="ERROR",
            LOG_FORMAT="text",
        )
        self.engine = OrchestratorEngine(MemoryStorage(), config)
        for blueprint in API_BLUEPRINTS:
            self.engine.register_blueprint(blueprint)
        self.loop = asyncio.new_event_loop()
        self.known: list[dict[str, str]] = [{}]
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzzed-engine", daemon=True)

    def __enter__(self) -> LiveEngine:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.engine.start("127.0.0.1", 0), self.loop).result(30)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.engine.port}"

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.engine.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def seed(self) -> None:
        """A few jobs and a worker, so generated requests sometimes meet real ones."""

        async def seed() -> None:
            await self.engine.register_worker({"worker_id": "w1", "supported_tasks": ["echo"]})
            for name in ("simple", "work", "approval", "work", "approval"):
                job = await self.engine.create_job(name, {"n": 1}, client="default")
                self.known.append({"job_id": job.id, "worker_id": "w1", "name": name})

        asyncio.run_coroutine_threadsafe(seed(), self.loop).result(30)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveEngine]:
    server = LiveEngine()
    with server:
        server.seed()
        yield server


def _document() -> dict[str, Any]:
    """The document the live engine serves, built at collection time to parametrize the tests."""
    engine = LiveEngine().engine
    return build_document(create_app(engine))


SCHEMA = schemathesis.openapi.from_dict(_document())
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_every_operation_answers_within_the_spec(live: LiveEngine, label: str) -> None:
    operation = OPERATIONS[label]
    if operation.path == "/_public/metrics" and getattr(live.engine, "metrics", None) is None:
        pytest.skip("this engine has no metrics collector yet: /_public/metrics answers 503")

    sent: list[int] = []

    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))

    @given(case=strategy, real=st.sampled_from(live.known))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any, real: dict[str, str]) -> None:
        if case.path_parameters and real:  # half the time, ids of things that exist
            case.path_parameters = {k: real.get(k, v) for k, v in case.path_parameters.items()}
        response = case.call_and_validate(
            base_url=live.url,
            headers={**(case.headers or {}), **HEADERS},
            timeout=10,
            checks=[not_a_server_error, response_schema_conformance],
        )
        sent.append(response.status_code)

    check()
    assert sent, "no request was sent"
    print(label, sorted(set(sent)))


def test_every_route_is_fuzzed() -> None:
    assert len(OPERATIONS) == sum(len(item) for item in _document()["paths"].values())


# -- boundary and negative cases (schemathesis' coverage phase) ------------------------------------
COVERAGE_CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 19,
        "phases": {
            "examples": {"enabled": False},
            "fuzzing": {"enabled": False},
            "coverage": {"enabled": True},
        },
        "generation": {"mode": "all"},
    }
)
COVERAGE_SCHEMA = schemathesis.openapi.from_dict(_document(), config=COVERAGE_CONFIG)
live_for_coverage = live


@COVERAGE_SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_boundary_and_negative_values_never_answer_5xx(case: Any, live_for_coverage: LiveEngine) -> None:
    """Every operation with values at, just past and far past its schema's bounds (lengths, ranges,
    enums, types, missing and extra fields): a 4xx naming the problem or a success, never a 5xx."""
    response = case.call(base_url=live_for_coverage.url, headers={**(case.headers or {}), **HEADERS}, timeout=10)
    assert response.status_code < 500, (case.method, case.formatted_path, case.query, case.body, response.text)
    if response.status_code >= 400 and response.status_code != 405:
        content_type = response.headers.get("content-type", [""])[0]  # schemathesis: lower case, lists
        assert content_type.startswith("application/json"), (case.formatted_path, response.status_code, content_type)
        assert response.json()["error"]
