"""Which storage an engine uses when none is passed: Redis when configured, else memory."""

from __future__ import annotations

from engine_helpers import fast_config, wait_for_status

from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.storage import MemoryStorage, RedisStorage


def _flow() -> StateMachineBlueprint:
    bp = StateMachineBlueprint("choice")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to("done")

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    return bp


def test_without_redis_settings_the_engine_keeps_state_in_memory():
    assert isinstance(OrchestratorEngine(config=fast_config()).storage, MemoryStorage)


async def test_redis_url_makes_the_engine_use_redis(redis_server, redis_client):
    engine = OrchestratorEngine(config=fast_config(REDIS_URL=redis_server.url))
    assert isinstance(engine.storage, RedisStorage)
    engine.register_blueprint(_flow())
    await engine.start(http=False)
    try:
        job = await engine.create_job("choice", {})
        await wait_for_status(engine, job.id, "finished")
        assert await redis_client.dbsize() > 0  # the job lives in Redis
    finally:
        await engine.stop()


def test_redis_host_settings_build_a_redis_url():
    config = fast_config(REDIS_HOST="cache.internal", REDIS_PORT=6380, REDIS_DB=2)
    assert config.redis_url == "redis://cache.internal:6380/2"
    assert isinstance(OrchestratorEngine(config=config).storage, RedisStorage)
