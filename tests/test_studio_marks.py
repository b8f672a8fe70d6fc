"""Marks on a drawn graph (avtomatika.studio.marks): anchors placed once per SVG, marks drawn relative to them.

The SVG is parsed as XML and nodes are found by their ``<title>``; the blueprint is the notebooks' ``report``
(eight states, a ``.when()`` branch whose edges carry tooltips, a fan-out, a human approval).
"""

from __future__ import annotations

import html
import math
import re
import xml.etree.ElementTree as ET

import pytest
from support.blueprints import report
from support.notebook import SVG_NS as SVG

from avtomatika.graph import blueprint_svg, extract
from avtomatika.studio.graphs import JobPath, counts_marks, job_marks
from avtomatika.studio.marks import EdgeMark, NodeMark, anchored, mark_svg, overlay
from avtomatika.studio.render import partials


@pytest.fixture(scope="module")
def drawn() -> tuple[str, ET.Element]:
    svg = anchored(blueprint_svg(report()))
    return svg, ET.fromstring(svg)


def nodes_by_title(root: ET.Element) -> dict[str, ET.Element]:
    states = [g for g in root.iter(f"{SVG}g") if "state" in (g.get("class") or "").split()]
    return {title.text or "": g for g in states if (title := g.find(f"{SVG}title")) is not None}


def anchor_of(group: ET.Element) -> ET.Element:
    found = [child for child in group if child.tag == f"{SVG}svg" and child.get("class") == "mark"]
    assert len(found) == 1, "one anchor per group, its last child"
    assert group[-1] is found[0]
    return found[0]


def box(points: str) -> tuple[float, float, float, float]:
    values = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", points)]
    xs, ys = values[0::2], values[1::2]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def test_each_node_gets_an_anchor_over_its_shape(drawn: tuple[str, ET.Element]) -> None:
    _, root = drawn
    for state, group in nodes_by_title(root).items():
        shape = next(child for child in group.iter() if child.tag in (f"{SVG}path", f"{SVG}polygon"))
        anchor = anchor_of(group)
        expected = box(shape.get("d") or shape.get("points") or "")
        placed = tuple(float(anchor.get(k) or "nan") for k in ("x", "y", "width", "height"))
        assert placed == pytest.approx(expected, abs=0.01), state
        assert anchor.get("data-for") == group.get("id")
        assert anchor.get("overflow") == "visible"


def test_each_edge_gets_an_anchor_half_way_along_its_path(drawn: tuple[str, ET.Element]) -> None:
    _, root = drawn
    edges = [g for g in root.iter(f"{SVG}g") if "edge" in (g.get("class") or "").split()]
    assert edges
    for edge in edges:
        anchor = anchor_of(edge)
        path = next(child for child in edge.iter() if child.tag == f"{SVG}path")
        values = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path.get("d") or "")]
        ends = (values[0], values[1]), (values[-2], values[-1])
        middle = float(anchor.get("x") or "nan"), float(anchor.get("y") or "nan")
        between = min(ends[0][0], ends[1][0]) - 30 <= middle[0] <= max(ends[0][0], ends[1][0]) + 30
        assert between, f"{edge.get('id')}: {middle} not between {ends}"
        assert not math.isnan(middle[1])


def test_anchoring_is_done_once_per_svg(drawn: tuple[str, ET.Element]) -> None:
    svg, _ = drawn
    assert anchored(blueprint_svg(report())) is svg
    assert anchored(svg).count('class="mark"') == svg.count('class="mark"'), "anchoring twice adds nothing"


def test_a_node_overlay_draws_its_badge_dot_and_note_relative_to_its_anchor() -> None:
    mark = NodeMark(
        "node-work",
        "work",
        ["has-jobs", "tone-failed", "breakpoint"],
        1200,
        "work\n1.2k",
        "3/40 done \N{MIDDLE DOT} 1 failed \N{MIDDLE DOT} 2 running",
    )
    drawn = ET.fromstring(f'<svg xmlns="http://www.w3.org/2000/svg">{overlay(mark)}</svg>')
    badge = drawn.find(f".//{SVG}g")
    assert badge is not None
    assert badge.get("class") == "live-badge tone-failed"
    assert [t.text for t in badge.iter(f"{SVG}text")] == ["1.2k"]
    assert drawn.find(f".//{SVG}circle").get("class") == "bp-mark"
    note = next(t for t in drawn.iter(f"{SVG}text") if t.get("class") == "node-note")
    assert [s.text for s in note] == ["3/40 done", "1 failed \N{MIDDLE DOT} 2 running"]
    assert str(overlay(NodeMark("node-start", "start"))) == ""


def test_an_edge_overlay_shows_how_often_it_was_taken_from_twice() -> None:
    assert str(overlay(EdgeMark("e", ["taken"], 1))) == ""
    assert "\N{MULTIPLICATION SIGN}3" in str(overlay(EdgeMark("e", ["taken"], 3)))


def test_the_notebook_drawing_and_the_studio_marks_carry_the_same_overlay(drawn: tuple[str, ET.Element]) -> None:
    svg, _ = drawn
    model = extract(report())
    marks = counts_marks(model, {"extract": {"failed": 2}})
    marked = mark_svg(svg, marks)
    work = nodes_by_title(ET.fromstring(marked))["extract"]
    assert {"has-jobs", "tone-failed"} <= set((work.get("class") or "").split())
    assert (work.get("data-state"), work.get("data-count")) == ("extract", "2")
    in_svg = ET.tostring(anchor_of(work)[0], encoding="unicode")
    page = partials().get_template("_graph_marks.html").render(marks=marks)
    carried = re.search(r'data-node="node-extract"[^>]*data-overlay="([^"]*)"', page)
    assert carried is not None
    studio = ET.fromstring(f'<svg xmlns="http://www.w3.org/2000/svg">{html.unescape(carried[1])}</svg>')
    assert ET.tostring(studio[0], encoding="unicode") == in_svg


def test_a_jobs_path_marks_the_edges_it_took(drawn: tuple[str, ET.Element]) -> None:
    svg, _ = drawn
    model = extract(report())
    path = JobPath("extract", "running", {"intake": 1, "extract": 2}, [])
    marked = ET.fromstring(mark_svg(svg, job_marks(model, path)))
    work = nodes_by_title(marked)["extract"]
    assert {"active", "visited", "tone-running"} <= set((work.get("class") or "").split())
    assert [t.text for t in anchor_of(work).iter(f"{SVG}text")] == ["2"]
