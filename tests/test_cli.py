"""The ``avtomatika`` command: graph, serve, and its error messages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.processes import free_port, running_process

BLUEPRINT_MODULE = textwrap.dedent(
    """
    from avtomatika import OrchestratorEngine, StateMachineBlueprint
    from avtomatika.config import Config

    flow = StateMachineBlueprint("cli_flow", api_version="v1", api_endpoint="/jobs/cli_flow")

    @flow.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to("done")

    @flow.handler_for("done", is_end=True)
    async def done(context):
        pass

    not_a_blueprint = 42
    """
)


def avtomatika(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "avtomatika", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "flows.py").write_text(BLUEPRINT_MODULE)
    return tmp_path


def test_graph_prints_dot(project: Path) -> None:
    done = avtomatika("graph", "flows:flow", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout.lstrip().startswith("digraph")
    assert "start" in done.stdout
    assert "done" in done.stdout


def test_graph_writes_svg_named_as_asked(project: Path) -> None:
    done = avtomatika("graph", "flows.py:flow", "-o", "out.svg", cwd=project)
    assert done.returncode == 0, done.stderr
    svg = ET.fromstring((project / "out.svg").read_text())
    titles = {element.text for element in svg.iter("{http://www.w3.org/2000/svg}title")}
    assert {"start", "done"} <= titles


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("flows:missing", "has no attribute 'missing'"),
        ("nowhere:flow", "cannot import 'nowhere'"),
        ("flows", "expected MODULE:NAME"),
        ("flows:not_a_blueprint", "is not a StateMachineBlueprint"),
    ],
)
def test_graph_explains_a_bad_target(project: Path, target: str, message: str) -> None:
    done = avtomatika("graph", target, cwd=project)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_a_blueprint_and_run_a_job(project: Path, tmp_path: Path) -> None:
    import json
    import time
    import urllib.request

    port = free_port()
    env = {"LOG_FORMAT": "text", "STUDIO_ENABLED": "false"}
    command = [sys.executable, "-m", "avtomatika", "serve", "flows:flow", "--host", "127.0.0.1", "--port", str(port)]
    with running_process(
        command, env, tmp_path / "serve.log", cwd=project, wait_url=f"http://127.0.0.1:{port}/_public/status"
    ):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/jobs/cli_flow",
            data=b"{}",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            job_id = json.loads(response.read())["job_id"]
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}", timeout=10) as response:
                status = json.loads(response.read())["status"]
            if status == "finished" or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert status == "finished"


def test_bad_configuration_names_the_variable(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "avtomatika", "serve", "flows:flow"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**__import__("os").environ, "API_PORT": "not-a-port"},
    )
    assert done.returncode != 0
    assert "API_PORT" in done.stderr
    assert "Traceback" not in done.stderr
