"""Reading py-spy's collapsed stacks: top frames (as text) and a flame graph (as SVG).

A collapsed-stacks line is ``frame;frame;...;leaf COUNT`` with frames like
``step (/work/main/engine/runtime/runner.py:92)``, outermost first. Files are shortened to ``engine/x.py``
for the engine, ``package/x.py`` for site-packages and the standard library.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
ENGINE_DIR = str(Path(__file__).resolve().parent.parent / "engine") + "/"
TOP = 20
#: Engine frames every sample of the serving process sits under: not where time goes.
ENTRY_FRAMES = frozenset(
    {
        "engine/__main__.py:<module>",
        "engine/cli.py:main",
        "engine/cli.py:serve",
        "engine/engine.py:OrchestratorEngine.run",
        "engine/engine.py:OrchestratorEngine._serve_forever",
    }
)
#: Where a sample's time goes, by the first of these frames found in its stack (else "other").
AREAS = (
    ("history: events captured on the bus", "engine/history/writer.py:HistoryWriter.on_event"),
    ("history: writer task and SQLite thread", "engine/history/writer.py:HistoryWriter._run"),
    ("history: writer task and SQLite thread", "concurrent/futures/thread.py:_worker"),
    ("stepping jobs (runtime.runner.JobRunner.consume)", "engine/runtime/runner.py:JobRunner.consume"),
    ("scheduler (timers, expired workers)", "engine/runtime/scheduler.py:Scheduler.run"),
    ("client API handlers", "engine/api/client.py:"),
    ("worker API handlers", "engine/api/worker.py:"),
    ("public API handlers", "engine/api/public.py:"),
    ("aiohttp: sending responses (socket writes)", "aiohttp/web_protocol.py:RequestHandler.finish_response"),
    ("aiohttp: reading and parsing requests", "asyncio/selector_events.py:_SelectorSocketTransport._read_ready"),
    ("aiohttp: reading and parsing requests", "aiohttp/web_protocol.py:RequestHandler.data_received"),  # uvloop
    ("aiohttp: routing, middleware, request objects", "aiohttp/web_protocol.py:RequestHandler._handle_request"),
    ("aiohttp: connection handling", "aiohttp/web_protocol.py:RequestHandler.start"),
    ("event loop itself", "asyncio/base_events.py:BaseEventLoop._run_once"),
)
#: Frames of the loop or a thread; what runs right under the last of them is what the sample is about.
DISPATCH_FRAMES = ("asyncio/events.py:Handle._run", "threading.py:Thread.run", "asyncio/base_events.py:")


def is_engine_file(path: str) -> bool:
    """Engine code: py-spy names files relative to the engine's working directory when it can."""
    return path.startswith((ENGINE_DIR, "engine/"))


def short_file(path: str) -> str:
    if path.startswith(ENGINE_DIR):
        return "engine/" + path[len(ENGINE_DIR) :]
    for marker in ("site-packages/", "/python3.11/", "/python3.12/", "/python3.13/", "/lib/python3/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def function_of(frame: str) -> tuple[str, bool]:
    """``file:function`` of a frame, and whether it is engine code."""
    match = FRAME.match(frame)
    if match is None:
        return frame, False
    path = match["file"]
    name = f"{short_file(path)}:{match['name']}"
    return name, is_engine_file(path) and name not in ENTRY_FRAMES


def _outside(functions: list[tuple[str, bool]]) -> str:
    """A sample without engine code, named after what runs under the loop's (or thread's) dispatch."""
    below = 0
    for index, (name, _) in enumerate(functions):
        if name.startswith(DISPATCH_FRAMES):
            below = index + 1
    if below >= len(functions):
        return f"(no engine frame) {functions[-1][0]}" if functions else "(empty)"
    return f"(no engine frame) {functions[below][0]}"


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


@dataclass
class Summary:
    samples: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)
    engine_inclusive: Counter[str] = field(default_factory=Counter)
    innermost_engine: Counter[str] = field(default_factory=Counter)
    areas: Counter[str] = field(default_factory=Counter)


def _area(names: list[str]) -> str:
    present = set(names)
    for area, frame in AREAS:
        if frame.endswith(":"):
            if any(name.startswith(frame) for name in names):
                return area
        elif frame in present:
            return area
    return "other (stacks py-spy read only partly, mostly storage and dataclasses)"


def summarise(stacks: list[tuple[list[str], int]]) -> Summary:
    summary = Summary()
    for frames, count in stacks:
        summary.samples += count
        functions = [function_of(f) for f in frames]
        if functions:
            summary.self_time[functions[-1][0]] += count
        for name in {name for name, _ in functions}:
            summary.inclusive[name] += count
        for name in {name for name, is_engine in functions if is_engine}:
            summary.engine_inclusive[name] += count
        innermost = next((name for name, is_engine in reversed(functions) if is_engine), None)
        if innermost is None:
            innermost = _outside(functions)
        summary.innermost_engine[innermost] += count
        summary.areas[_area([name for name, _ in functions])] += count
    return summary


def report(summary: Summary, title: str) -> str:
    def table(heading: str, counter: Counter[str]) -> list[str]:
        lines = [f"\n{heading}", f"{'samples':>8} {'%':>6}  frame"]
        for name, count in counter.most_common(TOP):
            lines.append(f"{count:>8} {100 * count / max(summary.samples, 1):>6.1f}  {name}")
        return lines

    lines = [f"{title}: {summary.samples} samples of the engine process (py-spy, idle excluded)"]
    lines += table("By area (first matching frame of each stack):", summary.areas)
    lines += table("Self time (leaf frame), top 20:", summary.self_time)
    lines += table(
        "Engine functions, inclusive (time inside them and what they call), top 20:", summary.engine_inclusive
    )
    lines += table(
        "Innermost engine frame (each sample charged to the engine function nearest the leaf), top 20:",
        summary.innermost_engine,
    )
    lines += table("All functions, inclusive, top 20:", summary.inclusive)
    return "\n".join(lines) + "\n"


# -- flame graph -----------------------------------------------------------------------------------
@dataclass
class _Node:
    count: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


ROW_PX = 16
WIDTH_PX = 1600
CHAR_PX = 6.5


def flamegraph_svg(stacks: list[tuple[list[str], int]], title: str) -> str:
    """An icicle-style flame graph (root at the top), one rectangle per frame, hover for details."""
    root = _Node()
    for frames, count in stacks:
        root.count += count
        node = root
        for frame in frames:
            name, _ = function_of(frame)
            node = node.children.setdefault(name, _Node())
            node.count += count
    total = max(root.count, 1)
    rects: list[str] = []
    depth_max = 0

    def draw(node: _Node, name: str, x: float, depth: int) -> None:
        nonlocal depth_max
        width = WIDTH_PX * node.count / total
        if width < 0.5:
            return
        depth_max = max(depth_max, depth)
        y = 24 + depth * ROW_PX
        engine = name.startswith("engine/")
        colour = f"hsl({30 if engine else 200},{70 if engine else 35}%,{60 + (sum(map(ord, name)) % 15)}%)"
        label = html.escape(name if len(name) * CHAR_PX < width - 4 else name[: max(int((width - 4) / CHAR_PX) - 2, 0)])
        tip = html.escape(f"{name}: {node.count} samples ({100 * node.count / total:.1f}%)")
        rects.append(
            f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW_PX - 1}" '
            f'fill="{colour}"/>'
            + (f'<text x="{x + 2:.1f}" y="{y + 12}">{label}</text>' if len(label) > 2 else "")
            + "</g>"
        )
        child_x = x
        for child_name, child in sorted(node.children.items(), key=lambda item: -item[1].count):
            draw(child, child_name, child_x, depth + 1)
            child_x += WIDTH_PX * child.count / total

    draw(root, "all", 0.0, 0)
    height = 24 + (depth_max + 1) * ROW_PX + 8
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{height}" '
        f'font-family="monospace" font-size="11">'
        f'<text x="4" y="16" font-size="13">{html.escape(title)} ({root.count} samples; orange: engine code)</text>'
        + "".join(rects)
        + "</svg>\n"
    )


def write_profile_reports(collapsed: Path, title: str) -> tuple[Path, Path, Summary]:
    """Write ``<name>.top.txt`` and ``<name>.svg`` next to the collapsed stacks."""
    stacks = read_stacks(collapsed)
    summary = summarise(stacks)
    top = collapsed.with_suffix(".top.txt")
    top.write_text(report(summary, title))
    svg = collapsed.with_suffix(".svg")
    svg.write_text(flamegraph_svg(stacks, title))
    return top, svg, summary


def main(argv: list[str] | None = None) -> None:
    """Rewrite the reports of collapsed-stacks files: ``python -m benchmarks.profiles FILE...``."""
    import sys

    for name in argv if argv is not None else sys.argv[1:]:
        path = Path(name)
        top, svg, summary = write_profile_reports(path, path.stem)
        print(f"{path}: {summary.samples} samples -> {top}, {svg}")


if __name__ == "__main__":
    main()
