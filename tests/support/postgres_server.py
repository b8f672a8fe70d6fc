"""A real PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temp dir, on a free loopback port.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
``postgres`` user (``runuser``), in a ``mktemp -d`` directory under /tmp that user can reach.
Trust authentication, ``fsync=off``: for tests only.

A plugin of ``conftest.py``: the ``postgres`` fixture is one server for the whole session (each test
makes a database of its own with ``postgres.create_database()``). A test that stops and starts its
server uses ``running_postgres()`` (a context manager) after ``require_postgres()``, which fails the
test with a clear message when PostgreSQL is not installed.

Set ``AVTOMATIKA_PG_BIN`` to a ``bin`` directory to choose another installation.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_BIN_ENV = "AVTOMATIKA_PG_BIN"
PG_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries, or the user to run them as, are missing."""


def postgres_bin_dir() -> Path:
    """The ``bin`` directory of the newest PostgreSQL installed (or ``$AVTOMATIKA_PG_BIN``)."""
    configured = os.environ.get(PG_BIN_ENV)
    candidates = [Path(configured)] if configured else []
    installed = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(installed, key=lambda p: _version_key(p.parent.name), reverse=True)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin"
        + (f" nor in {PG_BIN_ENV}={configured}" if configured else "")
        + ". Install them with: apt-get install -y postgresql  (or set "
        + PG_BIN_ENV
        + " to the bin directory of an installation)."
    )


def require_postgres() -> None:
    """Fail the calling test (not error it) with how to install PostgreSQL, when it is missing."""
    import pytest

    try:
        postgres_bin_dir()
        _as_postgres_user()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres_user() -> list[str]:
    """The command prefix that runs a program as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root, but `runuser` is missing to start PostgreSQL as 'postgres'")
    try:
        import pwd

        pwd.getpwnam(PG_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root, but there is no '{PG_USER}' user to run PostgreSQL as (apt-get install postgresql)"
        ) from None
    return ["runuser", "-u", PG_USER, "--"]


class PostgresServer:
    """One PostgreSQL cluster in a temp dir; ``start()``/``stop()`` may be repeated (same port, same data).

    Args:
        bin_dir: Where ``initdb`` and ``pg_ctl`` are.
        port: The TCP port on 127.0.0.1 (a free one when omitted).
    """

    def __init__(self, bin_dir: Path | None = None, port: int | None = None) -> None:
        self.bin_dir = bin_dir or postgres_bin_dir()
        self.port = port or free_port()
        self.prefix = _as_postgres_user()
        self.root = Path(tempfile.mkdtemp(prefix="avtomatika-pg-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.running = False

    def __repr__(self) -> str:
        return f"PostgresServer(port={self.port}, data_dir={str(self.data_dir)!r}, running={self.running})"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout_s: float = 60.0) -> None:
        proc = subprocess.run(
            [*self.prefix, *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                f"--- server log ---\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def init(self) -> None:
        """``initdb`` the data directory (owned by the server's user)."""
        if self.prefix:
            shutil.chown(self.root, user=PG_USER)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            PG_USER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )

    def start(self) -> None:
        """``pg_ctl start`` and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-w",
            "-o",
            options,
            "start",
        )
        self.running = True

    def stop(self) -> None:
        """``pg_ctl -m fast stop``: clients are disconnected at once."""
        if self.running:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            self.running = False

    def create_database(self, name: str | None = None) -> str:
        """Create a database and return its DSN."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self._run(str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, name)
        return self.dsn(name)

    def remove(self) -> None:
        """Stop the server if it runs and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def running_postgres(attempts: int = 3) -> Iterator[PostgresServer]:
    """A started server, stopped and deleted on exit; retries on another port if one was taken."""
    bin_dir = postgres_bin_dir()
    last_error: Exception | None = None
    for _ in range(attempts):
        server = PostgresServer(bin_dir)
        try:
            server.init()
            server.start()
        except RuntimeError as exc:  # most likely the port was taken meanwhile
            last_error = exc
            server.remove()
            continue
        try:
            yield server
        finally:
            server.remove()
        return
    raise RuntimeError(f"could not start PostgreSQL after {attempts} attempts: {last_error}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One server for the session; each test makes a database of its own (``create_database``)."""
    require_postgres()
    with running_postgres() as server:
        yield server
