"""Blueprints and readers for the notebook widget tests (no kernel: the widgets' models are driven directly),
and the condition tests' blueprint.

Graphs are read by parsing the SVG and finding nodes by their ``<title>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html import unescape
from typing import Any

SVG_NS = "{http://www.w3.org/2000/svg}"


def svg_nodes(html: str) -> dict[str, set[str]]:
    """State name (the node's <title>) -> classes of its SVG group."""
    svg = html[html.index("<svg") : html.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg)
    nodes = {}
    for group in root.iter(f"{SVG_NS}g"):
        classes = set(group.get("class", "").split())
        title = group.find(f"{SVG_NS}title")
        if "state" in classes and title is not None:
            nodes[title.text or ""] = classes
    return nodes


def highlighted(html: str) -> list[str]:
    return [state for state, classes in svg_nodes(html).items() if "active" in classes]


def taken_edges(html: str) -> int:
    """Edges between states marked taken (the arrow into the start state is not one of them)."""
    return len(re.findall(r'class="edge (?![^"]*\bentry\b)[^"]*\btaken\b', html))


def text_of(html: str) -> str:
    return unescape(re.sub(r"<style>.*?</style>|<[^>]+>", " ", html, flags=re.S))


async def press(widget: Any, button: Any) -> None:
    """Click ``button`` as a front end would, and wait for what it started."""
    button.click()
    await widget.settled()
