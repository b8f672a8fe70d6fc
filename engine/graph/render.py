"""DOT to SVG (inline, in ``currentColor``) or to a file, with graphviz imported only when used; one
SVG per blueprint version is kept."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from .dot import GraphvizNotFound, _graphviz, to_dot
from .model import GraphConfig, GraphModel, NodeModel, extract

if TYPE_CHECKING:
    from ..blueprint import StateMachineBlueprint

logger = logging.getLogger(__name__)

#: Blueprint SVGs kept by :func:`blueprint_svg`, keyed by (name, version).
SVG_CACHE_SIZE = 64


_FILE_CONFIG = GraphConfig(background="white")


def _pipe(source: str, output_format: str) -> bytes:
    """Run ``dot -T<output_format>`` on ``source``."""
    graphviz = _graphviz()
    try:
        data: bytes = graphviz.pipe("dot", output_format, source.encode())
    except graphviz.ExecutableNotFound as exc:
        raise GraphvizNotFound(
            "Graphviz's `dot` program",
            "`apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS), "
            "or see https://graphviz.org/download/",
        ) from exc
    return data


_BLACK = re.compile(r'\b(fill|stroke)="(?:black|#000000)"')


def render_svg(model: GraphModel, config: GraphConfig | None = None) -> str:
    """The graph as inline SVG: no XML prolog or doctype, drawn in ``currentColor``.

    Args:
        model: What to draw, from :func:`extract`.
        config: Layout and fonts; defaults to :class:`GraphConfig` (transparent background).
    """
    svg = _pipe(to_dot(model, config), "svg").decode("utf-8")
    svg = svg[svg.index("<svg") :]
    # graphviz draws in black; currentColor follows the page's text colour (dark mode), and the
    # fill on <svg> reaches the <text> elements, which carry no fill of their own.
    svg = _BLACK.sub(r'\1="currentColor"', svg)
    return svg.replace("<svg ", '<svg class="avtomatika-graph" fill="currentColor" ', 1)


_svg_cache: OrderedDict[tuple[str, str], str] = OrderedDict()
_svg_cache_lock = threading.Lock()  # the studio renders in executor threads


def blueprint_svg(blueprint: StateMachineBlueprint) -> str:
    """The blueprint's SVG without live data, rendered once per ``(name, version)`` (a small LRU)."""
    with _svg_cache_lock:
        svg = _svg_cache.get((blueprint.name, blueprint.version))
    return svg if svg is not None else model_svg(extract(blueprint))


def model_svg(model: GraphModel) -> str:
    """The SVG of a model without live data (today's, or one history kept), cached per ``(blueprint,
    version)`` like :func:`blueprint_svg`."""
    key = (model.blueprint, model.version)
    with _svg_cache_lock:
        svg = _svg_cache.get(key)
        if svg is not None:
            _svg_cache.move_to_end(key)
            return svg
    bare = GraphModel(model.blueprint, model.version, [_bare(n) for n in model.nodes], list(model.edges))
    rendered = render_svg(bare)  # outside the lock: dot takes tens of milliseconds
    with _svg_cache_lock:
        svg = _svg_cache.setdefault(key, rendered)  # a racing thread's copy wins, so callers share one
        _svg_cache.move_to_end(key)
        while len(_svg_cache) > SVG_CACHE_SIZE:
            _svg_cache.popitem(last=False)
    logger.debug("rendered the graph of blueprint %s, version %s", model.blueprint, model.version)
    return svg


def _bare(node: NodeModel) -> NodeModel:
    return NodeModel(
        node.id, node.label, node.is_start, node.is_end, node.is_aggregator, unknown=node.unknown, dom_id=node.dom_id
    )


def clear_svg_cache() -> None:
    """Forget every SVG :func:`blueprint_svg` has kept."""
    with _svg_cache_lock:
        _svg_cache.clear()


def render_blueprint(
    blueprint: StateMachineBlueprint,
    output_filename: str | os.PathLike[str] | None = None,
    output_format: str = "png",
) -> str | None:
    """The blueprint's DOT source, or, given ``output_filename``, the path of the file rendered.

    Args:
        blueprint: The blueprint to draw.
        output_filename: Where to write; the file gets exactly this name (no extension is added).
        output_format: A graphviz format (``png``, ``svg``, ``pdf``...). With the default ``png``, a
            filename ending in another known format (``graph.svg``) picks that format.
    """
    model = extract(blueprint)
    if output_filename is None:
        return to_dot(model)
    path = Path(output_filename)
    output_format = _file_format(path, output_format)
    path.write_bytes(_pipe(to_dot(model, _FILE_CONFIG), output_format))
    logger.info("wrote the graph of blueprint %s to %s (%s)", blueprint.name, path, output_format)
    return str(path)


def _file_format(path: Path, output_format: str) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if output_format == "png" and suffix in _graphviz().FORMATS:
        return str(suffix)
    return output_format
