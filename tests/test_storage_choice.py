"""Which storage an engine uses when none is passed: Redis when configured, else memory."""

from __future__ import annotations

import subprocess
import sys

from support.blueprints import hop_blueprint
from support.engine import fast_config, wait_for_status

from avtomatika import OrchestratorEngine
from avtomatika.storage import MemoryStorage, RedisStorage


def test_without_redis_settings_the_engine_keeps_state_in_memory():
    assert isinstance(OrchestratorEngine(config=fast_config()).storage, MemoryStorage)


async def test_redis_url_makes_the_engine_use_redis(redis_server, redis_client):
    engine = OrchestratorEngine(config=fast_config(REDIS_URL=redis_server.url))
    assert isinstance(engine.storage, RedisStorage)
    engine.register_blueprint(hop_blueprint("choice"))
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


_WITHOUT_HIREDIS = """
import sys
sys.modules["hiredis"] = None  # installed with avtomatika[redis]; here as if it were not
from avtomatika import Config, OrchestratorEngine
from avtomatika.errors import ConfigError
try:
    OrchestratorEngine(config=Config(REDIS_URL="redis://127.0.0.1:1"))
except ConfigError as exc:
    print(exc)
"""


def test_redis_configured_without_its_client_says_what_to_install(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_HIREDIS], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    assert "REDIS_URL/REDIS_HOST is set but the Redis client is missing" in proc.stdout
    assert 'pip install "avtomatika[redis]"' in proc.stdout
