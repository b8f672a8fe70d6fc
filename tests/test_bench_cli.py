"""benchmarks' command lines: the CPU speed check, ``--engine-cpu``, and the instruction counts' workloads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.__main__ import _engine_cpu, parse_args
from benchmarks.instructions import main as instructions_main
from benchmarks.procs import ROOT, cpu_speeds_us


def test_cpu_speeds_cover_every_allowed_cpu_and_restore_the_affinity() -> None:
    allowed = os.sched_getaffinity(0)
    speeds = cpu_speeds_us()
    assert set(speeds) == allowed
    assert all(us > 0 for us in speeds.values())
    assert os.sched_getaffinity(0) == allowed


def test_fastest_is_the_cpu_with_the_shortest_reference_loop() -> None:
    assert _engine_cpu("fastest", {0: 2.2, 1: 1.0, 2: 1.4}) == 1
    assert _engine_cpu("2", {0: 2.2, 1: 1.0, 2: 1.4}) == 2
    assert _engine_cpu(None, {0: 1.0}) is None


@pytest.mark.parametrize("value", ["fast", "-1", "9999"])
def test_engine_cpu_refuses_what_names_no_allowed_cpu(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    with pytest.raises(SystemExit):
        parse_args(["--engine-cpu", value])
    assert "--engine-cpu must be 'fastest' or one of the CPUs" in capsys.readouterr().err


def test_engine_cpu_accepts_fastest_and_an_allowed_cpu() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    assert parse_args(["--engine-cpu", "fastest"]).engine_cpu == "fastest"
    cpu = str(min(os.sched_getaffinity(0)))
    assert parse_args(["--engine-cpu", cpu]).engine_cpu == cpu


@pytest.mark.parametrize(("workload", "jobs"), [("W1", "3"), ("W2", "3"), ("W3", "1"), ("W4", "3")])
def test_instruction_workloads_run_their_jobs_to_the_end(workload: str, jobs: str) -> None:
    """What runs under valgrind, run without it: every job finishes (a failed one fails the run)."""
    command = [sys.executable, "-m", "benchmarks.instructions", "--inner", workload, "--jobs", jobs]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "LOG_LEVEL": "ERROR"}, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


@pytest.mark.parametrize("workload", ["W1", "W2", "W4"])
def test_floor_serves_the_instruction_workloads(workload: str) -> None:
    """``--floor``: the same requests through HTTP, answered by aiohttp alone, each job to its end."""
    command = [sys.executable, "-m", "benchmarks.instructions", "--inner", workload, "--jobs", "3", "--floor"]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "LOG_LEVEL": "ERROR"}, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_instructions_refuses_an_unknown_workload(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        instructions_main(["--workloads", "W9"])
    assert "unknown workload 'W9'" in capsys.readouterr().err
