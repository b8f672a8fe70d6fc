"""A ``.when()`` condition that raises on a job's data quarantines the job, saying which and why.

Silently treating it as false would send the job down another branch (``"2000" > 1000`` with an
amount that came as a string from JSON). On a live engine the job is quarantined with a message
naming the blueprint, the state, the handler and the condition; the engine's log says so too.
"""

from __future__ import annotations

import logging

import aiohttp
import pytest
from support.blueprints import amount_router
from support.engine import fast_config, started_engine, wait_for_status

from avtomatika import OrchestratorEngine
from avtomatika.errors import ConditionFailed, HandlerError
from avtomatika.runtime.actions import ActionFactory
from avtomatika.runtime.context import DataStores, JobContext
from avtomatika.storage import MemoryStorage


def context_of(initial_data: dict) -> JobContext:
    return JobContext(
        job_id="j1",
        blueprint_name="cond_orders",
        current_state="route",
        initial_data=initial_data,
        state_history={},
        actions=ActionFactory("cond_orders", "route"),
        data_stores=DataStores({}),
    )


def test_find_handler_raises_condition_failed_naming_everything():
    bp = amount_router()
    with pytest.raises(ConditionFailed) as info:
        bp.find_handler("route", context_of({"amount": "2000"}))
    error = info.value
    assert isinstance(error, HandlerError)
    assert (error.blueprint, error.state, error.expression) == (
        "cond_orders",
        "route",
        "context.initial_data.amount > 1000",
    )
    assert error.handler.endswith("big_order")
    message = str(error)
    assert "Blueprint 'cond_orders', state 'route'" in message
    assert "'>' not supported between instances of 'str' and 'int'" in message
    assert "'2000' > 1000" in message


def test_missing_data_still_picks_the_default_handler():
    assert amount_router().find_handler("route", context_of({})).name.endswith("small_order")
    assert amount_router().find_handler("route", context_of({"amount": 5000})).name.endswith("big_order")


async def test_a_live_engine_quarantines_the_job_with_the_condition_and_logs_it(caplog):
    caplog.set_level(logging.WARNING, logger="avtomatika.blueprint")
    async with started_engine(amount_router()) as engine:
        job = await engine.create_job("cond_orders", {"amount": "2000"})
        stored = await wait_for_status(engine, job.id, "quarantined")
        fine = await engine.create_job("cond_orders", {"amount": 10})
        await wait_for_status(engine, fine.id, "finished")
    assert stored.state == "route"
    assert "condition 'context.initial_data.amount > 1000' of handler" in stored.error
    assert "'2000' > 1000" in stored.error
    assert stored.visits.get("done", 0) == 0  # it did not silently take the default branch
    logged = [r.getMessage() for r in caplog.records if r.name == "avtomatika.blueprint"]
    assert any("'2000' > 1000" in line for line in logged)


async def test_the_studio_lists_the_quarantined_job_with_the_condition():
    engine = OrchestratorEngine(MemoryStorage(), fast_config())
    engine.register_blueprint(amount_router())
    await engine.start(host="127.0.0.1", port=0)
    try:
        job = await engine.create_job("cond_orders", {"amount": "2000"})
        await wait_for_status(engine, job.id, "quarantined")
        url = f"http://127.0.0.1:{engine.port}/studio/quarantine?format=json"
        async with aiohttp.ClientSession() as http, http.get(url) as got:
            assert got.status == 200
            page = await got.text()
    finally:
        await engine.stop()
    assert job.id in page
    assert "condition 'context.initial_data.amount > 1000' of handler" in page
