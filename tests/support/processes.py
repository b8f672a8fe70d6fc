"""Process helpers for end-to-end tests: free ports, child processes with log files, readiness waits.

Everything here is synchronous so it can be used from sync fixtures and, through
``asyncio.to_thread`` or directly (it blocks only briefly), from async ones.

Typical use::

    port = free_port()
    with running_process(
        [sys.executable, "-m", "avtomatika", ...],
        env={"API_PORT": str(port)},
        log_path=tmp_path / "engine.log",
        wait_url=f"http://127.0.0.1:{port}/_public/status",
    ) as proc:
        ...
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
"""The repository's ``tests/`` directory."""

SUPPORT_DIR = TESTS_DIR / "support"
APPS_DIR = SUPPORT_DIR / "apps"
"""Engines served as processes: ``python -m avtomatika serve <APPS_DIR>/<name>.py:engine``."""
WORKERS_DIR = SUPPORT_DIR / "workers"
"""Worker scripts run as processes."""
ECHO_WORKER_SCRIPT = WORKERS_DIR / "echo.py"
"""Our own protocol-exact worker (run it with the project's python, ``sys.executable``); the one built on
the real ``avtomatika-worker`` SDK is ``support/workers/sdk.py`` (``sdk_worker_command``)."""


def app_spec(name: str) -> str:
    """The ``serve`` argument of the engine in ``support/apps/<name>.py``."""
    return f"{APPS_DIR / name}.py:engine"


class ProcessDied(RuntimeError):
    """A child process exited while we were waiting for it to become ready."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(log_path: str | os.PathLike[str] | None, lines: int = 60) -> str:
    """Return the last ``lines`` lines of a log file ('' if there is none)."""
    if log_path is None:
        return ""
    try:
        text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start_process(
    args: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    inherit_env: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group, stdout and stderr appended to ``log_path``.

    ``env`` is layered over ``os.environ`` (unless ``inherit_env`` is false); ``PYTHONUNBUFFERED=1``
    is set so log lines appear at once. Without ``log_path`` the output goes to ``/dev/null``.
    The log path is remembered on the returned object as ``proc.log_path``.
    """
    full_env: dict[str, str] = dict(os.environ) if inherit_env else {}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    if env:
        full_env.update({key: str(value) for key, value in env.items()})
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    else:
        log_file = open(os.devnull, "ab")  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [os.fspath(arg) for arg in args],
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log_file.close()  # the child keeps its own descriptor
    proc.log_path = Path(log_path) if log_path is not None else None  # type: ignore[attr-defined]
    return proc


def _died_message(proc: subprocess.Popen[bytes], what: str, log_path: str | os.PathLike[str] | None) -> str:
    return f"process {proc.args!r} exited with code {proc.returncode} {what}\n--- log tail ---\n" + log_tail(log_path)


def wait_http(
    url: str,
    timeout_s: float = 15.0,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: str | os.PathLike[str] | None = None,
) -> int:
    """Poll ``url`` with GET until the server gives any HTTP answer (even 4xx/5xx); return its status.

    Raises ``ProcessDied`` (with the log tail) as soon as ``proc`` has exited, and ``TimeoutError``
    (with the log tail) after ``timeout_s``. ``log_path`` defaults to ``proc.log_path``.
    """
    if log_path is None and proc is not None:
        log_path = getattr(proc, "log_path", None)
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        if proc is not None and proc.poll() is not None:
            raise ProcessDied(_died_message(proc, f"before {url} answered", log_path))
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_s}s\n--- log tail ---\n{log_tail(log_path)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def wait_log(
    log_path: str | os.PathLike[str],
    needle: str,
    timeout_s: float = 15.0,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    count: int = 1,
) -> str:
    """Wait until ``needle`` occurs ``count`` times in the log file; return the log text.

    Useful for processes without an HTTP port (workers log ``registered`` once they are known
    to the orchestrator). Raises like ``wait_http``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            text = Path(log_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        if text.count(needle) >= count:
            return text
        if proc is not None and proc.poll() is not None:
            raise ProcessDied(_died_message(proc, f"before logging {needle!r}", log_path))
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{needle!r} not logged within {timeout_s}s\n--- log tail ---\n{log_tail(log_path)}")
        time.sleep(0.05)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the child's process group (falling back to the child alone)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with suppress(ProcessLookupError):
            proc.send_signal(sig)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> int | None:
    """Stop a child started by ``start_process``: SIGTERM its group, wait, then SIGKILL; return its code.

    Safe to call on a process that has already exited (its group is still signalled, so
    grandchildren do not linger).
    """
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=timeout_s)
    # Leftover members of the group (if any) get no second chance.
    _signal_group(proc, signal.SIGKILL)
    return proc.returncode


def kill_process(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> int | None:
    """SIGKILL the child's group at once (simulates a crash); return its exit code."""
    _signal_group(proc, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s)
    return proc.returncode


@contextmanager
def running_process(
    args: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None = None,
    log_path: str | os.PathLike[str] | None = None,
    *,
    wait_url: str | None = None,
    wait_log_text: str | None = None,
    ready_timeout_s: float = 15.0,
    stop_timeout_s: float = 5.0,
    cwd: str | os.PathLike[str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a process, optionally wait until ``wait_url`` answers / ``wait_log_text`` is logged, yield it,
    and stop it on exit (even if the readiness wait failed).
    """
    proc = start_process(args, env, log_path, cwd=cwd)
    try:
        if wait_url is not None:
            wait_http(wait_url, ready_timeout_s, proc, log_path)
        if wait_log_text is not None:
            if log_path is None:
                raise ValueError("wait_log_text needs a log_path")
            wait_log(log_path, wait_log_text, ready_timeout_s, proc)
        yield proc
    finally:
        stop_process(proc, stop_timeout_s)


def python_command(script: str | os.PathLike[str], python: str | os.PathLike[str] | None = None) -> list[str]:
    """``[python, script]`` with the current interpreter by default."""
    return [os.fspath(python or sys.executable), os.fspath(script)]
