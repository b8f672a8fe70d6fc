"""The processes of a benchmark run: the engine, the workers, redis-server, py-spy; and /proc readings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .http_client import Connection, HttpError

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
LOGS = ARTIFACTS / "bench"
PROFILES = ARTIFACTS / "profiles"
CLIENT_TOKEN = "bench-client-token"
WORKER_TOKEN = "bench-worker-token"
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
ENGINE_STOP_WAIT_S = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# -- /proc -----------------------------------------------------------------------------------------
def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` in seconds, its threads included, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included)."""
    return sum(cpu_times(pid))


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (any of its threads), from /proc/<pid>/task/<tid>/children."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def history_process(pid: int) -> int | None:
    """The pid of the SQLite history process the engine ``pid`` started, if it has one (PostgreSQL
    history, and the floor, have none)."""
    for child in children(pid):
        with contextlib.suppress(FileNotFoundError):
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            # A spare (started ahead of a next open, see avtomatika.history.sqlite) holds no database.
            if b"avtomatika.history.sqlite_process" in command and b"--spare-for=" not in command:
                return child
    return None


#: What :func:`cpu_speeds_us` times (``python -m timeit "sum(range(100))"`` prints the same figure).
REFERENCE_LOOP = "sum(range(100))"


def cpu_speeds_us() -> dict[int, float]:
    """Microseconds per :data:`REFERENCE_LOOP` on each CPU this process may use (best of 5, as timeit).

    A virtual machine's CPUs need not be equal or steady: on the one of these figures one ran plain
    Python at half the speed of the other for minutes on end (2.2 against 1.0 µs), so the engine's CPU
    per job depended on the CPU the scheduler gave it. Printed with the figures, and used by
    ``--engine-cpu fastest``.
    """
    allowed = os.sched_getaffinity(0)
    timer = timeit.Timer(REFERENCE_LOOP)
    speeds: dict[int, float] = {}
    try:
        for cpu in sorted(allowed):
            os.sched_setaffinity(0, {cpu})
            number, _ = timer.autorange()
            speeds[cpu] = min(timer.repeat(5, number)) / number * 1e6
    finally:
        os.sched_setaffinity(0, allowed)
    return speeds


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine spent busy (every core), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, wait_s: float = STOP_TIMEOUT_S) -> None:
    """Signal one process we started, wait for it, kill it if it does not exit in time."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(wait_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_S)


def tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# -- redis-server ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Redis:
    url: str
    pid: int

    def info(self, section: str) -> dict[str, Any]:
        """``INFO <section>`` of this redis-server (a connection of its own, outside the engine's)."""
        with self._client() as client:
            return dict(client.info(section))

    def stream_length(self, key: str) -> int:
        with self._client() as client:
            return int(client.xlen(key))

    def _client(self) -> Any:
        import redis

        return redis.Redis(unix_socket_path=self.url.removeprefix("unix://"))

    def commands(self) -> int:
        """Commands redis-server has run so far (``INFO commandstats``; those of Lua scripts included)."""
        return sum(int(stats["calls"]) for stats in self.info("commandstats").values())

    def used_memory(self) -> int:
        """Bytes redis-server holds for data (``INFO memory``: ``used_memory``)."""
        return int(self.info("memory")["used_memory"])


@contextlib.contextmanager
def redis_server() -> Iterator[Redis]:
    """A throwaway redis-server on a Unix socket (no persistence), with its ``unix://`` URL."""
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/local/bin")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    with tempfile.TemporaryDirectory(prefix="avtomatika-bench-redis-") as directory:
        sock = Path(directory) / "redis.sock"
        process = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not sock.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)
            yield Redis(f"unix://{sock}", process.pid)
        finally:
            stop_process(process)


# -- the engine and its workers --------------------------------------------------------------------
@dataclass
class Engine:
    """The engine process (``python -m avtomatika serve benchmarks.app:engine``) and its workers."""

    name: str
    redis_url: str | None = None
    #: What serves, after ``python -m``: the engine, or :attr:`FLOOR`.
    serves: tuple[str, ...] = ("avtomatika", "serve", "benchmarks.app:engine")
    #: The CPU the engine's event loop runs on, once it serves (None: wherever the scheduler puts it).
    cpu: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    log_path: Path = field(init=False)
    #: ``--storage floor``: the harness's requests answered by aiohttp alone (:mod:`benchmarks.floor`).
    FLOOR: ClassVar[tuple[str, ...]] = ("benchmarks.floor",)

    def __post_init__(self) -> None:
        self.log_path = LOGS / f"engine-{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def history_pid(self) -> int | None:
        """SQLite history's process, a child of the engine's (None: none, e.g. the floor)."""
        return history_process(self.pid)

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "LOG_LEVEL": "WARNING",
            "CLIENT_TOKEN": CLIENT_TOKEN,
            "GLOBAL_WORKER_TOKEN": WORKER_TOKEN,
            "STUDIO_ENABLED": "false",
            "API_HOST": HOST,
            "PYTHONUNBUFFERED": "1",
            # The load generator is one client and a worker sends up to 16 requests at once: the
            # default rates (1000/s per caller) would answer 429 instead of measuring the engine.
            "RATE_LIMIT_CLIENT_READ_PER_SECOND": "0",
            "RATE_LIMIT_CLIENT_WRITE_PER_SECOND": "0",
            "RATE_LIMIT_WORKER_PER_SECOND": "0",
            **self.extra_env,
        }
        env.pop("REDIS_HOST", None)
        env.pop("REDIS_URL", None)
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    async def start(self) -> None:
        self._spawn_engine()
        await self._wait_until("/_public/status", lambda _: True, "to serve")
        if self.cpu is not None:
            # The thread whose id is the process id: the event loop's. Threads started before (the
            # history's thread) keep every CPU, and so does the SQLite history process it started:
            # history does not take the loop's CPU time.
            os.sched_setaffinity(self.pid, {self.cpu})

    def _spawn_engine(self) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        command = [sys.executable, "-m", *self.serves, "--host", HOST, "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT)

    async def start_workers(self, count: int, concurrency: int) -> None:
        ids = {f"bench-{self.name}-{index}" for index in range(count)}
        for index, worker_id in enumerate(sorted(ids)):
            self._spawn_worker(worker_id, concurrency, LOGS / f"worker-{self.name}-{index}.log")

        def all_registered(body: object) -> bool:
            workers = body.get("workers") if isinstance(body, dict) else None
            return isinstance(workers, list) and ids <= {w.get("worker_id") for w in workers}

        await self._wait_until("/api/v1/workers", all_registered, "to see its workers")

    async def _wait_until(self, path: str, ready: Callable[[object], bool], what: str) -> None:
        connection = Connection(self.url, {"X-Avtomatika-Token": CLIENT_TOKEN}, timeout_s=2.0)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    break
                with contextlib.suppress(HttpError, OSError, TimeoutError, ValueError):
                    response = await connection.request("GET", path)
                    if response.status == 200 and ready(response.json()):
                        return
                await asyncio.sleep(0.05)
        finally:
            connection.close()
        raise RuntimeError(f"the engine failed {what} in {START_TIMEOUT_S}s; its log:\n{tail(self.log_path)}")

    def _spawn_worker(self, worker_id: str, concurrency: int, log_path: Path) -> None:
        command = [sys.executable, "-m", "benchmarks.worker", "--url", self.url, "--token", WORKER_TOKEN]
        command += ["--id", worker_id, "--concurrency", str(concurrency)]
        with log_path.open("wb") as log:
            self.workers.append(subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for worker in self.workers:
            stop_process(worker)
        self.workers = []
        if self.process is not None:
            # A graceful stop waits for open long polls to time out (WORKER_POLL_TIMEOUT_SECONDS) even
            # though their workers are gone; nothing is measured any more, so it is not waited for.
            stop_process(self.process, signal.SIGINT, ENGINE_STOP_WAIT_S)
            self.process = None


# -- py-spy ----------------------------------------------------------------------------------------
def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


@dataclass
class Profiler:
    """``py-spy record`` attached to the engine for the duration of one workload (raw collapsed stacks)."""

    pid: int
    output: Path
    rate: int = 250
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = py_spy()
        if binary is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        command = [binary, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw"]
        command += ["--output", str(self.output), "--nonblocking"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # attaching takes a moment; samples before the workload starts are idle anyway
        if self.process.poll() is not None:
            error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            raise RuntimeError(f"py-spy could not attach to pid {self.pid}: {error.strip()}")

    def stop(self) -> Path | None:
        """Stop sampling (SIGINT makes py-spy write its file); the collapsed-stacks file, if written."""
        if self.process is None:
            return None
        stop_process(self.process, signal.SIGINT)
        self.process = None
        return self.output if self.output.exists() else None
