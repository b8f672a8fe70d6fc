"""The wheel is complete: built from this tree, installed in a fresh venv, it exposes the API and CLI.

`pip install -e .` hides packaging mistakes (a subpackage missing from pyproject's package list, a
file that is not package data) because the source tree is on the path. This test builds the wheel
with `python -m build --wheel` from a copy of the tree, installs it into a brand-new venv (no system
site-packages; pip may fetch dependencies from PyPI) and uses it from an empty directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]

# Source folders and the import path each one becomes (pyproject's package-dir).
SOURCE_PACKAGES = {"engine": "avtomatika", "studio": "avtomatika/studio"}

# Not copied to the build directory: local state that must not leak into the wheel.
_TOP_LEVEL_SKIP = {".venv", ".git", "build", "dist", "artifacts", "node_modules"}
_ANYWHERE_SKIP = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".ipynb_checkpoints"}

PUBLIC_API = """
import avtomatika
from avtomatika import OrchestratorEngine, StateMachineBlueprint
from avtomatika.config import Config
from avtomatika.storage import MemoryStorage

print(avtomatika.__file__)
"""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    return env


def _text(stream: str | bytes | None) -> str:
    if isinstance(stream, bytes):
        return stream.decode(errors="replace")
    return stream or ""


def _run(cmd: list[str], *, what: str, cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run `cmd`; on failure or timeout, fail the test with the command and all of its output."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{what}: no answer after {timeout_s:.0f} s\n$ {shlex.join(cmd)}\n"
            f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}"
        )
    if proc.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {proc.returncode})\n$ {shlex.join(cmd)}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc


def _ignore(directory: str, names: list[str]) -> set[str]:
    skip = set(_ANYWHERE_SKIP)
    if Path(directory).resolve() == ROOT:
        skip |= _TOP_LEVEL_SKIP
    return {n for n in names if n in skip or n.endswith(".egg-info")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the tree, so stale build/ output or egg-info cannot leak in."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=_ignore, symlinks=True)
    dist = work / "dist"
    _run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(src)],
        what="python -m build --wheel",
        cwd=work,
        timeout_s=600,
    )
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {dist}, found {[w.name for w in wheels]}"
    return wheels[0]


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) with the wheel and its dependencies installed."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], what="python -m venv", cwd=venv.parent, timeout_s=180)
    python = venv / "bin" / "python"
    _run(
        [str(python), "-m", "pip", "install", str(wheel)],
        what=f"pip install {wheel.name} into a fresh venv",
        cwd=venv.parent,
        timeout_s=600,
    )
    return python


def test_wheel_holds_every_source_module_and_the_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = []
    for folder, target in SOURCE_PACKAGES.items():
        root = ROOT / folder
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.py")):
            relative = path.relative_to(root)
            if "__pycache__" in relative.parts:
                continue
            if (name := f"{target}/{relative.as_posix()}") not in names:
                missing.append(name)
    assert not missing, (
        f"{wheel.name} lacks modules that exist in the source tree (is the subpackage listed under "
        f"[tool.setuptools] packages in pyproject.toml?): {missing}"
    )
    assert "avtomatika/py.typed" in names, f"{wheel.name} lacks avtomatika/py.typed"
    licenses = [n for n in names if ".dist-info/" in n and n.rsplit("/", 1)[-1].startswith("LICENSE")]
    assert licenses, f"{wheel.name} carries no LICENSE in its .dist-info"
    tops = {n.split("/", 1)[0] for n in names}
    strays = sorted(t for t in tops if t != "avtomatika" and not t.endswith(".dist-info"))
    assert not strays, f"{wheel.name} installs unexpected top-level entries: {strays}"


def test_installed_wheel_exposes_the_public_api(venv_python, tmp_path):
    proc = _run(
        [str(venv_python), "-I", "-c", PUBLIC_API],
        what="importing the public API from the installed wheel",
        cwd=tmp_path,
        timeout_s=120,
    )
    location = Path(proc.stdout.strip().splitlines()[-1]).resolve()
    venv = venv_python.parent.parent.resolve()
    assert location.is_relative_to(venv), (
        f"avtomatika was imported from {location}, not from the wheel installed in {venv}"
    )


@pytest.mark.parametrize("command", [["avtomatika", "--help"], ["python", "-m", "avtomatika", "--help"]], ids=" ".join)
def test_installed_wheel_runs_the_cli(venv_python, tmp_path, command):
    executable = venv_python.parent / command[0]
    assert executable.exists(), f"the wheel installed no {command[0]!r} script in {executable.parent}"
    proc = _run(
        [str(executable), *command[1:]],
        what=shlex.join(command) + " from the installed wheel",
        cwd=tmp_path,
        timeout_s=120,
    )
    assert "usage" in proc.stdout.lower(), f"{shlex.join(command)} printed no usage:\n{proc.stdout}"


# A blueprint module served by the installed wheel's CLI, from outside the source tree.
TINY_BLUEPRINT = """
from avtomatika import StateMachineBlueprint

blueprint = StateMachineBlueprint("wheel_check", api_version="v1", api_endpoint="/jobs/wheel_check")


@blueprint.handler_for("start", is_start=True)
async def start(context):
    context.actions.transition_to("done")


@blueprint.handler_for("done", is_end=True)
async def done(context):
    pass
"""

STUDIO_FILES = """
from avtomatika.studio.render import STATIC_DIR, TEMPLATES_DIR

print(TEMPLATES_DIR)
print(STATIC_DIR)
"""

_SERVING = re.compile(r"serving on http://[^:\s]+:(\d+)")


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, following redirects."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


@contextlib.contextmanager
def _serving(python: Path, cwd: Path, log: Path) -> Iterator[int]:
    """Run ``python -m avtomatika serve`` on a free port; yields the port once it listens."""
    env = {**_clean_env(), "LOG_FORMAT": "text", "HISTORY_DATABASE_URI": "sqlite::memory:"}
    cmd = [str(python), "-m", "avtomatika", "serve", "tiny:blueprint", "--host", "127.0.0.1", "--port", "0"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (found := _SERVING.search(log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"$ {shlex.join(cmd)} did not start serving (exit {proc.poll()}):\n{log.read_text()}")
            time.sleep(0.1)
        yield int(found.group(1))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_installed_wheel_serves_the_studio_with_its_css_and_htmx(venv_python, tmp_path):
    proc = _run(
        [str(venv_python), "-I", "-c", STUDIO_FILES],
        what="finding the studio's templates and static files in the installed wheel",
        cwd=tmp_path,
        timeout_s=120,
    )
    venv = venv_python.parent.parent.resolve()
    for folder in proc.stdout.split():
        assert Path(folder).resolve().is_relative_to(venv), f"the studio reads {folder}, not the wheel in {venv}"
    (tmp_path / "tiny.py").write_text(TINY_BLUEPRINT)
    with _serving(venv_python, tmp_path, tmp_path / "engine.log") as port:
        base = f"http://127.0.0.1:{port}"
        status, content_type, page = _get(f"{base}/studio/blueprints")
        assert (status, content_type.split(";")[0]) == (200, "text/html")
        assert "wheel_check" in page, page[:2000]
        assert "<svg" in page, "the blueprint's graph is missing"
        links = re.findall(r'(?:href|src)="(/studio/static/[^"]+)"', page)
        css = [link for link in links if link.endswith(".css")]
        scripts = [link for link in links if link.endswith(".js")]
        assert css, links
        htmx = [s for s in scripts if "/vendor/htmx-2." in s]
        assert htmx, scripts
        assert any("/vendor/htmx-ext-sse" in s for s in scripts), scripts
        for link in css:
            status, content_type, body = _get(base + link)
            assert (status, content_type.split(";")[0]) == (200, "text/css"), link
            assert "{" in body, link
        for link in scripts:
            status, content_type, body = _get(base + link)
            assert status == 200, link
            assert "javascript" in content_type, (link, content_type)
            assert body.strip(), link
        assert "htmx" in _get(base + htmx[0])[2]
