"""The real worker SDK (``avtomatika-worker==1.0b1``) for interoperability tests.

The SDK pins ``aiohttp~=3.13.2`` and pulls ``aioboto3``, so it lives in a venv of its own, created once
and cached under a directory the caller chooses::

    @pytest.fixture(scope="session")
    def sdk_python(request) -> Path:
        try:
            return sdk_venv(request.config.cache.mkdir("avtomatika-sdk"))
        except SdkUnavailable as exc:
            pytest.skip(str(exc))

and the worker script ``tests/workers/sdk_worker.py`` is started with that python::

    proc = start_process(sdk_worker_command(sdk_python),
                         sdk_worker_env(url, "sdk-1", token), tmp_path / "sdk-1.log")
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .processes import SDK_WORKER_SCRIPT

SDK_REQUIREMENT = "avtomatika-worker==1.0b1"
SDK_VERSION = "1.0b1"

_NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Max retries exceeded",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "No matching distribution found",
    "Could not find a version that satisfies",
)


class SdkUnavailable(RuntimeError):
    """The SDK could not be installed because the package index is unreachable (tests should skip)."""


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (several pytest processes may build the venv at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def sdk_venv(
    cache_dir: str | os.PathLike[str],
    *,
    requirement: str = SDK_REQUIREMENT,
    timeout_s: float = 600.0,
) -> Path:
    """Return the python of a venv holding ``requirement``, creating it under ``cache_dir`` if needed.

    The venv is ``<cache_dir>/sdk-venv-<requirement>``; a ``.ready`` marker is written only after the
    install and an import check succeed, so an interrupted build is redone next time. Raises
    ``SdkUnavailable`` when pip fails for lack of network/index, ``RuntimeError`` on other failures.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", requirement)
    venv_dir = Path(cache_dir) / f"sdk-venv-{slug}"
    python = venv_dir / "bin" / "python"
    marker = venv_dir / ".ready"
    if marker.exists() and python.exists():
        return python
    with _file_lock(Path(cache_dir) / f"sdk-venv-{slug}.lock"):
        if marker.exists() and python.exists():
            return python
        if venv_dir.exists():
            shutil.rmtree(venv_dir)
        made = _run([sys.executable, "-m", "venv", str(venv_dir)], timeout_s)
        if made.returncode != 0:
            raise RuntimeError(f"python -m venv failed:\n{_tail(made.stdout + made.stderr)}")
        pip = _run([str(python), "-m", "pip", "install", "--quiet", requirement], timeout_s)
        if pip.returncode != 0:
            output = pip.stdout + pip.stderr
            if any(needle in output for needle in _NETWORK_ERRORS):
                raise SdkUnavailable(f"cannot install {requirement} (package index unreachable?):\n{_tail(output)}")
            raise RuntimeError(f"pip install {requirement} failed:\n{_tail(output)}")
        check = _run(
            [
                str(python),
                "-c",
                "import avtomatika_worker, sys; sys.stdout.write(avtomatika_worker.__version__)",
            ],
            120,
        )
        if check.returncode != 0:
            raise RuntimeError(f"the SDK venv cannot import avtomatika_worker:\n{_tail(check.stderr)}")
        marker.write_text(check.stdout.strip() + "\n", encoding="utf-8")
    return python


def sdk_worker_command(python: str | os.PathLike[str]) -> list[str]:
    """The command line that runs ``tests/workers/sdk_worker.py`` with the SDK venv's python."""
    return [os.fspath(python), os.fspath(SDK_WORKER_SCRIPT)]


def sdk_worker_env(
    orchestrator_url: str,
    worker_id: str,
    token: str,
    *,
    task_types: str = "echo",
    websockets: bool = True,
    **overrides: str,
) -> dict[str, str]:
    """Environment for the SDK worker with test-friendly timings (override any key via ``overrides``).

    Only SDK variables plus our script's ``TASK_TYPES``/``WORKER_TYPE``. Note the SDK defaults we change:
    HEARTBEAT_INTERVAL 15 -> 1, TASK_POLL_ERROR_DELAY 5 -> 0.5, RESULT_RETRY_INITIAL_DELAY 1 -> 0.2,
    WORKER_ENABLE_WEBSOCKETS false -> true (unless ``websockets=False``), MAX_CONCURRENT_TASKS 10 -> 4.
    """
    env = {
        "ORCHESTRATOR_URL": orchestrator_url,
        "WORKER_ID": worker_id,
        "WORKER_TOKEN": token,
        "TASK_TYPES": task_types,
        "HEARTBEAT_INTERVAL": "1",
        "TASK_POLL_TIMEOUT": "30",
        "TASK_POLL_ERROR_DELAY": "0.5",
        "IDLE_POLL_DELAY": "0.01",
        "RESULT_RETRY_INITIAL_DELAY": "0.2",
        "MAX_CONCURRENT_TASKS": "4",
        "WORKER_ENABLE_WEBSOCKETS": "true" if websockets else "false",
    }
    env.update(overrides)
    return env
