"""``avtomatika demo``: the engine with demo blueprints, demo workers and a steady trickle of jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal

from ..config import Config
from ..engine import OrchestratorEngine
from .blueprints import DEMO_BLUEPRINTS
from .workers import DEMO_WORKERS, run_worker

logger = logging.getLogger(__name__)


def sample_job() -> tuple[str, dict[str, object]]:
    """A random job for one of the demo blueprints."""
    choice = random.choice(["order_flow", "order_flow", "image_batch", "flaky_import"])
    if choice == "order_flow":
        return choice, {"priority": random.choice(["urgent", "normal", "normal"]), "items": ["book", "pen"]}
    if choice == "image_batch":
        return choice, {"images": [f"photo-{i}.jpg" for i in range(random.randint(2, 6))]}
    return choice, {"file": random.choice(["customers.csv", "orders.csv", "archive.corrupt"])}


async def trickle(engine: OrchestratorEngine, every_s: float) -> None:
    while True:
        name, data = sample_job()
        await engine.create_job(name, data, client="demo")
        await asyncio.sleep(random.uniform(0.5, 1.5) * every_s)


#: Where the demo keeps its history unless HISTORY_DATABASE_URI says otherwise (a file: it survives restarts).
DEMO_HISTORY_URI = "sqlite:///avtomatika-demo.db"


async def run_demo(host: str = "127.0.0.1", port: int = 8080, every_s: float = 2.0) -> None:
    """Serve the demo until SIGINT/SIGTERM: in-memory live state, history in a SQLite file."""
    history_uri = Config().HISTORY_DATABASE_URI or DEMO_HISTORY_URI
    config = Config(API_HOST=host, API_PORT=port, LOG_FORMAT="text", HISTORY_DATABASE_URI=history_uri)
    engine = OrchestratorEngine(config=config)
    for blueprint in DEMO_BLUEPRINTS:
        engine.register_blueprint(blueprint)
    await engine.start()
    base_url = f"http://127.0.0.1:{engine.port}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    background = [
        asyncio.create_task(run_worker(base_url, worker_id, types)) for worker_id, types in DEMO_WORKERS.items()
    ]
    background.append(asyncio.create_task(trickle(engine, every_s)))
    logger.warning(
        "Avtomatika demo running at http://%s:%s  (API: /api/v1/jobs, /api/v1/dashboard; Ctrl-C stops)",
        host,
        engine.port,
    )
    logger.warning("Avtomatika Studio: http://127.0.0.1:%s/studio/  (open on loopback only)", engine.port)
    logger.warning("History: %s", history_uri)
    try:
        await stop.wait()
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await engine.stop()
