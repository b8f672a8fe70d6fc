"""The ``avtomatika`` command: ``serve``, ``graph`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path
from typing import Any

from .blueprint import StateMachineBlueprint
from .config import Config
from .engine import OrchestratorEngine
from .errors import AvtomatikaError


def load_object(spec: str) -> Any:
    """Import ``module:attribute`` (the module may also be a path to a .py file)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SystemExit(f"expected MODULE:NAME, got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        sys.path.insert(0, str(path.parent))
        module_name = path.stem
    else:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise SystemExit(f"module {module_name!r} has no attribute {attribute!r}") from None


def engine_from(target: Any) -> OrchestratorEngine:
    """An engine from an engine, a blueprint, or a list of blueprints."""
    if isinstance(target, OrchestratorEngine):
        return target
    blueprints = [target] if isinstance(target, StateMachineBlueprint) else target
    if not isinstance(blueprints, list | tuple) or not all(isinstance(b, StateMachineBlueprint) for b in blueprints):
        raise SystemExit("serve needs an OrchestratorEngine, a StateMachineBlueprint, or a list of blueprints")
    engine = OrchestratorEngine(config=Config())
    for blueprint in blueprints:
        engine.register_blueprint(blueprint)
    return engine


def serve(args: argparse.Namespace) -> None:
    engine = engine_from(load_object(args.target))
    overrides = {k: v for k, v in (("API_HOST", args.host), ("API_PORT", args.port)) if v is not None}
    if overrides:
        engine.config = engine.config.replace(**overrides)
    engine.run()


def graph(args: argparse.Namespace) -> None:
    blueprint = load_object(args.target)
    if not isinstance(blueprint, StateMachineBlueprint):
        raise SystemExit(f"{args.target} is not a StateMachineBlueprint")
    if args.output is None:
        sys.stdout.write(blueprint.render_graph() or "")
        return
    output_format = args.format or Path(args.output).suffix.lstrip(".") or "svg"
    written = blueprint.render_graph(args.output, output_format)
    sys.stderr.write(f"wrote {written}\n")


def demo(args: argparse.Namespace) -> None:
    from .demo.run import run_demo

    asyncio.run(run_demo(args.host, args.port, args.every))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avtomatika", description="State-machine orchestrator for long-running jobs.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve an engine or blueprints (MODULE:NAME)")
    serve_cmd.add_argument("target", help="MODULE:NAME of an OrchestratorEngine, a blueprint or a list of them")
    serve_cmd.add_argument("--host", help="overrides API_HOST")
    serve_cmd.add_argument("--port", type=int, help="overrides API_PORT")
    serve_cmd.set_defaults(func=serve)
    graph_cmd = commands.add_parser("graph", help="draw a blueprint (DOT on stdout, or a file with -o)")
    graph_cmd.add_argument("target", help="MODULE:NAME of a StateMachineBlueprint")
    graph_cmd.add_argument("-o", "--output", help="file to write (format from its extension)")
    graph_cmd.add_argument("-f", "--format", help="output format (svg, png, pdf...)")
    graph_cmd.set_defaults(func=graph)
    demo_cmd = commands.add_parser("demo", help="run the demo: blueprints, workers and a trickle of jobs")
    demo_cmd.add_argument("--host", default="127.0.0.1")
    demo_cmd.add_argument("--port", type=int, default=8080)
    demo_cmd.add_argument("--every", type=float, default=2.0, help="seconds between demo jobs (about)")
    demo_cmd.set_defaults(func=demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AvtomatikaError as exc:
        raise SystemExit(f"error: {exc}") from None
    except KeyboardInterrupt:
        pass
