"""Engine benchmarks W1-W4 and W1W: ``python -m benchmarks`` or ``make bench``.

Each workload starts a fresh engine process (``python -m avtomatika serve benchmarks.app:engine``,
with ``LOG_LEVEL=WARNING``, client and worker tokens, ``STUDIO_ENABLED=false``), its worker processes
(``python -m benchmarks.worker``) when it needs some, and a throwaway redis-server for ``redis``;
this process is the load generator. Everything is on loopback. Figures:

- jobs/s: jobs measured / wall time of the measured phase;
- p50/p99: create request sent -> terminal status seen by the client's polling;
- server CPU ms/job: utime+stime of the engine process over the measured phase / jobs, and the same
  as a multiple of the floor's (aiohttp alone, measured in the same invocation);
- RSS/waiting job (W4): VmRSS of the engine after minus before the 10,000 jobs, / 10,000; with
  ``redis``, redis-server's ``used_memory`` likewise, and Redis commands per job (``INFO
  commandstats``, the commands of Lua scripts included); W4's create rate.

Results are also written to ``artifacts/bench/results.json``; with ``--profile``, py-spy samples the
engine during each workload and ``artifacts/profiles/<W>-<storage>.{collapsed,top.txt,svg}`` are
written.

    python -m benchmarks                                  # every workload on the floor, memory and redis
    python -m benchmarks --workloads W1,W2 --storage memory --profile
    python -m benchmarks --engine-cpu fastest             # the engine's loop alone on the fastest CPU
    python -m benchmarks --storage floor,memory           # aiohttp alone (benchmarks.floor), then the engine
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from typing import Any

from .loop import LOOP, run
from .procs import LOGS, REFERENCE_LOOP, cpu_speeds_us, py_spy
from .workloads import COUNTS, WORKLOADS, Options, Result

#: ``floor`` is no storage: :mod:`benchmarks.floor` (aiohttp alone) in the engine's place.
STORAGES = ("memory", "redis", "floor")
HARD_TIMEOUT_MARGIN_S = 90.0
#: Per workload and storage: issue 23's target (CPU per job as a multiple of the floor's in the same
#: run), then the original engine's figure as its README gave it ("-": none).
GOALS = {
    ("W1", "memory"): ("CPU <=2x floor", "1000/s p99 60ms 0.5ms"),
    ("W1", "redis"): ("<=25 cmds/job", "145/s 6ms"),
    ("W1W", "memory"): ("2 requests/job", "-"),
    ("W2", "memory"): ("CPU <=2x floor, p99<=100ms", "330/s p99 300ms 2ms"),
    ("W2", "redis"): ("<=40 cmds/job", "50/s p99 3s 20ms"),
    ("W3", "memory"): ("<=100 ms", "330 ms"),
    ("W3", "redis"): ("<=150 ms", "-"),
    ("W4", "memory"): ("<=500 B/job", "2.3 KB/job"),
    ("W4", "redis"): ("redis <=1 KB/job", "-"),
}


DEFAULTS = Options()


#: The status of a Redis row when the redis extra is not installed.
REDIS_MISSING = "redis extra not installed"


def redis_storage_available() -> bool:
    try:
        from avtomatika.storage import RedisStorage  # type: ignore[attr-defined]  # noqa: F401
    except ImportError:
        return False
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Engine benchmarks W1-W4, W1W.")
    parser.add_argument("--workloads", default="W1,W1W,W2,W3,W4", help="comma-separated, of W1 W1W W2 W3 W4")
    parser.add_argument(
        "--storage",
        default="floor,memory,redis",
        help="comma-separated, of memory redis floor (floor: no engine, aiohttp alone answering the same"
        " requests, which CPU per job is compared with; default floor,memory,redis)",
    )
    for name, meaning in COUNTS.items():
        default = getattr(DEFAULTS, name)
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=default, help=f"{meaning} (default {default})"
        )
    poll_ms, timeout_s = DEFAULTS.poll_s * 1000, DEFAULTS.timeout_s
    parser.add_argument(
        "--poll-ms", type=float, default=poll_ms, help=f"a client's pause between polls (default {poll_ms:g})"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=DEFAULTS.warmup,
        help=f"jobs run before each measurement (default {DEFAULTS.warmup})",
    )
    parser.add_argument(
        "--timeout", type=float, default=timeout_s, help=f"seconds allowed per workload (default {timeout_s:g})"
    )
    parser.add_argument("--profile", action="store_true", help="sample the engine with py-spy (artifacts/profiles/)")
    parser.add_argument(
        "--history", help="HISTORY_DATABASE_URI of the engine (default: unset, SQLite in a temporary file)"
    )
    parser.add_argument(
        "--engine-cpu",
        help="pin the engine's event loop to this CPU (a number, or 'fastest' by the speed check) and the "
        "harness's other processes to the other CPUs (default: the scheduler decides)",
    )
    args = parser.parse_args(argv)
    args.workload_list = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    args.storage_list = [s.strip().lower() for s in args.storage.split(",") if s.strip()]
    for name in args.workload_list:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r} (choose from {', '.join(WORKLOADS)})")
    for name in args.storage_list:
        if name not in STORAGES:
            parser.error(f"unknown storage {name!r} (choose from {', '.join(STORAGES)})")
    if args.profile and py_spy() is None:
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    if args.engine_cpu is not None:
        allowed = os.sched_getaffinity(0)
        if len(allowed) < 2:
            parser.error("--engine-cpu needs at least two CPUs (the engine's, and one for everything else)")
        if args.engine_cpu != "fastest" and (not args.engine_cpu.isdigit() or int(args.engine_cpu) not in allowed):
            parser.error(f"--engine-cpu must be 'fastest' or one of the CPUs {sorted(allowed)}")
    for name in COUNTS:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def floor_multiple(result: Result, results: list[Result]) -> float | None:
    """``result``'s engine CPU per job as a multiple of the floor's for the same workload, in this run."""
    floor = next((r for r in results if r.workload == result.workload and r.storage == "floor"), None)
    if floor is None or result.storage == "floor" or not floor.cpu_ms_per_job or result.cpu_ms_per_job is None:
        return None
    return result.cpu_ms_per_job / floor.cpu_ms_per_job


def table(results: list[Result]) -> str:
    header = (
        "workload",
        "storage",
        "jobs",
        "jobs/s",
        "p50 ms",
        "p99 ms",
        "CPU ms/job",
        "x floor",
        "redis cmds/job",
        "RSS B/wait job",
        "target",
        "original",
        "status",
    )
    rows = [header]
    for r in results:
        multiple = floor_multiple(r, results)
        rows.append(
            (
                r.workload,
                r.storage,
                str(r.jobs) if r.status != REDIS_MISSING else "-",
                _fmt(r.jobs_per_s, 0),
                _fmt(r.latency(0.5)),
                _fmt(r.latency(0.99)),
                _fmt(r.cpu_ms_per_job, 2),
                "-" if multiple is None else f"{multiple:.1f}x",
                _fmt(r.redis_commands_per_job, 1),
                _fmt(r.rss_per_waiting_job_b, 0),
                *GOALS.get((r.workload, r.storage), ("-", "-")),
                r.status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def details(r: Result) -> list[str]:
    if r.status == REDIS_MISSING:
        return []
    per_job = max(r.jobs, 1)
    parts = [
        f"engine {1000 * r.server_cpu_s / per_job:.2f} (kernel {1000 * r.server_sys_s / per_job:.2f})",
        f"load generator {1000 * r.loadgen_cpu_s / per_job:.2f}",
    ]
    if r.workers_cpu_s is not None:
        parts.append(f"workers {1000 * r.workers_cpu_s / per_job:.2f}")
    if r.redis_cpu_s is not None:
        parts.append(f"redis-server {1000 * r.redis_cpu_s / per_job:.2f}")
    if r.history_cpu_s is not None:
        parts.append(f"history process {1000 * r.history_cpu_s / per_job:.2f}")
    requests = f"{r.requests / per_job:.2f} client requests/job"
    lines = [
        f"{r.workload} {r.storage}: {r.jobs} jobs in {r.elapsed_s:.2f}s, {requests}; CPU ms/job: " + ", ".join(parts)
    ]
    measured = []
    if r.create_rate is not None:
        measured.append(f"created {r.create_rate:,.0f} jobs/s")
    if r.redis_memory_per_waiting_job_b is not None:
        measured.append(f"redis-server {r.redis_memory_per_waiting_job_b:,.0f} B of used_memory per waiting job")
    if r.history_rss_per_waiting_job_b is not None:
        measured.append(f"history process RSS {r.history_rss_per_waiting_job_b:,.0f} B per waiting job")
    if measured:
        lines.append("    " + "; ".join(measured))
    if r.elapsed_s > 0:
        busy = 100 * r.others_cpu_s / r.elapsed_s / (os.cpu_count() or 1)
        lines.append(f"    other processes on the machine kept {busy:.0f}% of its CPUs busy meanwhile")
    if r.note.strip():
        lines.append(f"    {r.note.strip()}")
    if r.profile_top:
        lines.append(f"    profile: {r.profile_top}, {r.profile_svg}; hottest engine frames (innermost):")
        lines += [f"      {share:5.1f}%  {name}" for name, share in r.hot_engine_frames]
    return lines


async def run_all(args: argparse.Namespace, engine_cpu: int | None) -> list[Result]:
    options = Options(
        **{name: getattr(args, name) for name in COUNTS},
        poll_s=args.poll_ms / 1000,
        timeout_s=args.timeout,
        warmup=args.warmup,
        profile=args.profile,
        history=args.history,
        engine_cpu=engine_cpu,
    )
    results = []
    for storage in args.storage_list:
        available = storage != "redis" or redis_storage_available()
        for workload in args.workload_list:
            if not available:
                print(f"{workload} {storage}: skipped, pip install 'avtomatika[redis]' first", flush=True)
                results.append(Result(workload, storage, status=REDIS_MISSING))
                continue
            print(f"{workload} {storage}: running...", flush=True)
            started = time.monotonic()
            try:
                # The workload bounds its own loops by --timeout; this also bounds starting and stopping.
                async with asyncio.timeout(options.timeout_s + HARD_TIMEOUT_MARGIN_S):
                    result = await WORKLOADS[workload](storage, options)
            except TimeoutError:
                result = Result(workload, storage, status="timeout", note="stopped by the hard timeout")
            except Exception as exc:  # one broken workload must not hide the others' figures
                result = Result(workload, storage, status="error", note=f"{type(exc).__name__}: {exc}")
            results.append(result)
            print(f"{workload} {storage}: {result.status} ({time.monotonic() - started:.1f}s)", flush=True)
    return results


def _engine_cpu(choice: str | None, speeds: dict[int, float]) -> int | None:
    """The CPU ``--engine-cpu`` names: None, a number, or the fastest by ``speeds``."""
    if choice is None:
        return None
    return min(speeds, key=speeds.__getitem__) if choice == "fastest" else int(choice)


def _speeds(speeds: dict[int, float]) -> str:
    return ", ".join(f"cpu{cpu} {us:.2f}" for cpu, us in speeds.items())


def _placement(engine_cpu: int | None) -> str:
    if engine_cpu is None:
        return "every process where the scheduler put it"
    return (
        f"the engine's event loop pinned to cpu{engine_cpu}, the load generator, workers and redis-server to the"
        " other CPUs, the engine's history thread unpinned"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    speeds_before = cpu_speeds_us()
    engine_cpu = _engine_cpu(args.engine_cpu, speeds_before)
    allowed = os.sched_getaffinity(0)
    if engine_cpu is not None:  # this process's children (workers, redis-server, py-spy) inherit the rest
        os.sched_setaffinity(0, allowed - {engine_cpu})
    try:
        results = run(run_all(args, engine_cpu))
    finally:
        os.sched_setaffinity(0, allowed)
    speeds_after = cpu_speeds_us()
    took = time.monotonic() - started
    machine = f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, loopback"
    history = args.history or "SQLite in a temporary file (default)"
    print()
    print(table(results))
    print()
    for result in results:
        for line in details(result):
            print(line)
    shared = f"load generator, engine and workers on the same machine (harness on {LOOP})"
    print(f"\n{machine}; {shared}; history: {history}; took {took:.0f}s")
    print(
        f"CPU speed (µs per {REFERENCE_LOOP}, as python -m timeit; lower is faster): {_speeds(speeds_before)}"
        f" before the workloads, {_speeds(speeds_after)} after; {_placement(engine_cpu)}"
    )
    LOGS.mkdir(parents=True, exist_ok=True)
    output: dict[str, Any] = {
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine,
        "harness_loop": LOOP,
        "history": history,
        "took_s": took,
        "cpu_speed_us": {"before": speeds_before, "after": speeds_after, "reference": REFERENCE_LOOP},
        "engine_cpu": engine_cpu,
        "results": [r.as_dict() for r in results],
    }
    (LOGS / "results.json").write_text(json.dumps(output, indent=2, default=str) + "\n")
    return 1 if any(r.status in ("error", "errors", "timeout") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
