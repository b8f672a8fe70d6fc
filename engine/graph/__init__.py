"""Blueprint graphs: extract a model, then render it as DOT, SVG or Mermaid.

As in python-statemachine, reading and drawing are kept apart: :func:`extract` turns a blueprint (and,
optionally, a job's live data) into plain dataclasses (:mod:`.model`), and the renderers
(:mod:`.dot`, :mod:`.render`, :mod:`.mermaid`) only read that model. graphviz is imported inside the
functions that run it, so ``import avtomatika`` never loads it.

SVG ids are stable, so the studio renders a blueprint once per version (:func:`blueprint_svg`) and
shows live data by toggling CSS classes on these elements:

- a state: ``<g id="node-<slug>" class="node state [start] [end] [aggregator] [unknown]">``
- an edge: ``<g id="edge-<source slug>-<target slug>-<n>" class="edge <kind>">``

Colours are left to CSS: the inline SVG draws in ``currentColor`` on a transparent background, so it
follows the page's light or dark theme.
"""

from .dot import WARNING_COLOR, GraphvizNotFound, shorten, to_dot, wrap_condition
from .mermaid import to_mermaid
from .model import EdgeModel, GraphConfig, GraphModel, NodeModel, extract, model_from_json, model_to_json, slug
from .render import SVG_CACHE_SIZE, blueprint_svg, clear_svg_cache, model_svg, render_blueprint, render_svg

__all__ = [
    "SVG_CACHE_SIZE",
    "WARNING_COLOR",
    "EdgeModel",
    "GraphConfig",
    "GraphModel",
    "GraphvizNotFound",
    "NodeModel",
    "blueprint_svg",
    "clear_svg_cache",
    "extract",
    "model_from_json",
    "model_svg",
    "model_to_json",
    "render_blueprint",
    "render_svg",
    "shorten",
    "slug",
    "to_dot",
    "to_mermaid",
    "wrap_condition",
]
