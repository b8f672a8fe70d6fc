"""benchmarks' command line: the CPU speed check and ``--engine-cpu``."""

from __future__ import annotations

import os

import pytest

from benchmarks.__main__ import _engine_cpu, parse_args
from benchmarks.procs import cpu_speeds_us


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
