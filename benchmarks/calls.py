"""Python function calls per job: a quick, load-independent count of the engine's work per job.

``benchmarks.instructions`` counts instructions under valgrind (minutes); this counts the calls
cProfile sees (seconds), for comparing two versions of the code while changing it. Each workload
runs in process as ``benchmarks.instructions`` runs it (with ``--http``: served on loopback and
driven by the harness's lean client, whose calls are the same for every version), twice, with
``--jobs`` and three times as many jobs; the difference over the extra jobs is the calls per job,
start-up left out. History's writer is stopped (its thread's SQLite work is not Python calls, and
its batches fall differently from run to run), so the count is steady to ~0.1 %.

    python -m benchmarks.calls --workloads W1,W2 --http
    PYTHONPATH=/path/to/other/version python -m benchmarks.calls    # the same for another version
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys

from .instructions import HTTP_ENV, RUN_ENV, _run_workload
from .loop import run
from .procs import ROOT


def count_calls(workload: str, jobs: int, http: bool) -> int:
    """Calls cProfile counts in one run of ``workload`` with ``jobs`` jobs (in a process of its own)."""
    command = [sys.executable, "-m", "benchmarks.calls", "--inner", workload, "--jobs", str(jobs)]
    command += ["--http"] if http else []
    env = {**os.environ, **RUN_ENV, **(HTTP_ENV if http else {})}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{workload}: the profiled run failed:\n{done.stderr[-2000:]}")
    return int(done.stdout.split()[-1])


def _inner(workload: str, jobs: int, http: bool) -> None:
    profile = cProfile.Profile()
    profile.enable()
    run(_run_workload(workload, jobs, False, http))
    profile.disable()
    print(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calls", description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="W1,W2", help="comma-separated, of W1 W2 W4")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs of the shorter run (the longer: 3x)")
    parser.add_argument("--http", action="store_true", help="through the HTTP API over loopback")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        _inner(args.inner, args.jobs, args.http)
        return 0
    how = "through HTTP, client included" if args.http else "in process"
    for name in (w.strip().upper() for w in args.workloads.split(",") if w.strip()):
        if name not in ("W1", "W2", "W4"):
            parser.error(f"unknown workload {name!r} (choose from W1, W2, W4)")
        short = count_calls(name, args.jobs, args.http)
        long = count_calls(name, 3 * args.jobs, args.http)
        print(f"{name}: {(long - short) / (2 * args.jobs):,.1f} calls per job ({how}; history off)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
