"""A real redis-server for tests: a child process on a Unix socket in a temporary directory.

No TCP port is opened, so parallel runs cannot race for one. Use the fixtures by importing them into
a test module (or listing this module in a conftest's ``pytest_plugins``)::

    from support.redis_server import redis_client_fixture, redis_server_fixture  # noqa: F401  (fixtures)

``redis_server`` (session) is the running server; ``redis_client`` (function) is an asyncio client on
it with the database flushed before the test. :func:`running_redis` starts more servers, e.g. with
``--appendonly yes`` for restart tests.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

#: How long a starting server has to answer PING.
START_TIMEOUT_S = 10.0
#: How long a terminated server has to exit before it is killed.
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RedisServer:
    """A running redis-server child process."""

    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        """A ``unix://`` URL for redis-py's ``from_url`` (and ``RedisStorage(url=...)``)."""
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def client(self, max_connections: int = 32, **options: object) -> aioredis.Redis:
        """A new asyncio client on this server; the caller closes it (``aclose`` closes its pool).

        Its pool makes callers wait for a free connection (redis-py's default pool raises past its
        size), and it keeps ``decode_responses=False``, as the storage needs.
        """
        pool = aioredis.BlockingConnectionPool.from_url(self.url, max_connections=max_connections, **options)
        return aioredis.Redis.from_pool(pool)


def redis_server_binary() -> str:
    """The redis-server executable; fails the test run (not skips it) when it is not installed."""
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/local/bin")
    if found is None:
        pytest.fail(
            "redis-server is not installed, and the Redis tests need a real one: "
            "apt-get install -y redis-server (or put redis-server on PATH)",
            pytrace=False,
        )
    return found


@contextmanager
def running_redis(directory: Path | None = None, *options: str) -> Iterator[RedisServer]:
    """Start redis-server on a Unix socket in ``directory`` (a new temporary one by default).

    ``options`` are extra command-line options, e.g. ``"--appendonly", "yes"``; they come after the
    defaults (no persistence), so they override them. Terminated, then killed, on exit.
    """
    with _directory(directory) as where:
        socket_path = where / "redis.sock"
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(where),
            "--logfile", str(where / "redis.log"),
            *options,
        ]  # fmt: skip
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        server = RedisServer(process, where)
        try:
            _wait_ready(server)
            yield server
        finally:
            _stop(process)


@contextmanager
def _directory(directory: Path | None) -> Iterator[Path]:
    """``directory`` as is, or a temporary directory removed afterwards (short: socket paths are limited)."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        yield directory
        return
    made = Path(tempfile.mkdtemp(prefix="redis-"))
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _wait_ready(server: RedisServer) -> None:
    give_up_at = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {server.process.returncode}:\n{_log_tail(server)}")
        if server.socket_path.exists():
            with suppress(redis.RedisError, OSError), redis.Redis(unix_socket_path=str(server.socket_path)) as client:
                if client.ping():
                    return
        if time.monotonic() > give_up_at:
            raise RuntimeError(f"redis-server did not answer PING in {START_TIMEOUT_S} s:\n{_log_tail(server)}")
        time.sleep(0.01)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_tail(server: RedisServer, lines: int = 30) -> str:
    try:
        return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """One redis-server for the whole test session."""
    with running_redis() as server:
        yield server


@pytest.fixture(name="redis_client")
async def redis_client_fixture(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on the session's server, its database flushed first."""
    client = redis_server.client()
    await client.flushdb()
    yield client
    await client.aclose()
