"""Blueprint graphs: the model from extract(), and DOT, SVG, file and Mermaid renderings.

SVG is parsed as XML and looked up by ``<title>`` (the state name, or ``source->target`` for an edge)
and by the stable ids the studio highlights; whole strings are never compared.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from avtomatika import StateMachineBlueprint
from avtomatika.graph import (
    WARNING_COLOR,
    EdgeModel,
    GraphConfig,
    GraphModel,
    GraphvizNotFound,
    NodeModel,
    blueprint_svg,
    clear_svg_cache,
    extract,
    render_blueprint,
    render_svg,
    shorten,
    slug,
    to_dot,
    to_mermaid,
    wrap_condition,
)
from avtomatika.graph import render as graph_render

SVG = "{http://www.w3.org/2000/svg}"
XLINK_TITLE = "{http://www.w3.org/1999/xlink}title"
LONG_CONDITION = "context.initial_data.customer.segment == 'enterprise' and context.initial_data.total > 1000"


@pytest.fixture(autouse=True)
def _fresh_svg_cache():
    clear_svg_cache()
    yield
    clear_svg_cache()


def make_blueprint(name: str = "orders") -> StateMachineBlueprint:
    """start ─x==1→ fast / default → work ═dispatch═> agg | bad (no handler); agg ⇢ human ⇢ done | review."""
    bp = StateMachineBlueprint(name)

    @bp.handler_for("start", is_start=True).when("context.initial_data.x == 1")
    async def start_fast(context):
        context.actions.transition_to("fast")

    @bp.handler_for("start", is_start=True)
    async def start(context):
        context.actions.transition_to("work")

    @bp.handler_for("fast")
    async def fast(context):
        context.actions.dispatch_parallel(tasks=[{"task_type": "a"}, {"task_type": "b"}], aggregate_into="agg")

    @bp.handler_for("work")
    async def work(context):
        context.actions.dispatch_task(task_type="t", params={}, transitions={"success": "agg", "failure": "bad"})

    @bp.aggregator_for("agg")
    async def agg(context):
        context.actions.await_human_approval(
            integration="mail", message="ok?", transitions={"approved": "done", "rejected": "review"}
        )

    @bp.handler_for("review").when(LONG_CONDITION)
    async def review(context):
        context.actions.run_blueprint(blueprint_name="audit", transitions={"success": "done"})

    @bp.handler_for("done", is_end=True)
    async def done(context):
        pass

    return bp


# -- helpers over parsed SVG ------------------------------------------------------------------------
def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def groups(root: ET.Element, css_class: str) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if css_class in (g.get("class") or "").split()]


def title(element: ET.Element) -> str:
    found = element.find(f"{SVG}title")
    assert found is not None
    return found.text or ""


def nodes_by_title(root: ET.Element) -> dict[str, ET.Element]:
    return {title(g): g for g in groups(root, "state")}


def edges_by_title(root: ET.Element) -> dict[str, list[ET.Element]]:
    found: dict[str, list[ET.Element]] = {}
    for g in groups(root, "edge"):
        found.setdefault(title(g), []).append(g)
    return found


def texts(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.iter(f"{SVG}text")]


def classes(element: ET.Element) -> set[str]:
    return set((element.get("class") or "").split())


def edge_labels(root: ET.Element, edge_title: str) -> set[str]:
    return {text for g in edges_by_title(root)[edge_title] for text in texts(g)}


@pytest.fixture
def svg_root() -> ET.Element:
    return parse(blueprint_svg(make_blueprint()))


# -- nodes ------------------------------------------------------------------------------------------
def test_one_node_per_state_with_stable_ids(svg_root):
    nodes = nodes_by_title(svg_root)
    assert set(nodes) == {"start", "fast", "work", "agg", "review", "done", "bad"}
    for name, g in nodes.items():
        assert g.get("id") == f"node-{name}"
        assert {"node", "state"} <= classes(g)
    ids = [g.get("id") for g in svg_root.iter() if g.get("id")]
    assert len(ids) == len(set(ids))


def test_start_end_and_aggregator_are_marked(svg_root):
    nodes = nodes_by_title(svg_root)
    assert "start" in classes(nodes["start"])
    assert "end" in classes(nodes["done"])
    assert "aggregator" in classes(nodes["agg"])
    assert not {"start", "end", "aggregator"} & classes(nodes["work"])
    # the start state: a bold border and an arrow from the entry point
    assert any(p.get("stroke-width") == "2" for p in nodes["start"].iter(f"{SVG}path"))
    (entry_arrow,) = [g for g in groups(svg_root, "entry") if "edge" in classes(g)]
    assert title(entry_arrow).endswith("->start")
    # an end state has a double border (peripheries=2), an ordinary one a single one
    assert len(list(nodes["done"].iter(f"{SVG}path"))) == 2
    assert len(list(nodes["work"].iter(f"{SVG}path"))) == 1
    # an aggregation state is a box3d: a polygon and its depth lines, not a rounded path
    assert list(nodes["agg"].iter(f"{SVG}polygon"))
    assert not list(nodes["agg"].iter(f"{SVG}path"))


def test_unknown_target_is_drawn_as_a_warning(svg_root):
    bad = nodes_by_title(svg_root)["bad"]
    assert "unknown" in classes(bad)
    assert "(no handler)" in texts(bad)
    path = bad.find(f".//{SVG}path")
    assert path is not None
    assert path.get("stroke") == WARNING_COLOR
    assert path.get("stroke-dasharray")
    assert "unknown" not in classes(nodes_by_title(svg_root)["work"])


def test_slugs_are_unique_deterministic_and_html_safe():
    names = ["plain", "with space", "with:colon", "with/slash", "ünï", "with-space", "a.b"]
    slugs = [slug(name) for name in names]
    assert len(set(slugs)) == len(slugs)
    assert slugs == [slug(name) for name in names]
    assert slug("plain") == "plain"
    assert slug("with-dash_ok") == "with-dash_ok"
    assert all(s.replace("-", "").replace("_", "").isalnum() and s.isascii() for s in slugs)


def test_odd_state_names_render_with_their_names_as_titles():
    bp = StateMachineBlueprint("odd names")

    @bp.handler_for("a:b", is_start=True)
    async def first(context):
        context.actions.transition_to('say "hi"\\now')

    @bp.handler_for('say "hi"\\now', is_end=True)
    async def second(context):
        pass

    root = parse(blueprint_svg(bp))
    nodes = nodes_by_title(root)
    assert "a:b" in nodes
    assert nodes["a:b"].get("id") == f"node-{slug('a:b')}"
    assert len(nodes) == 2  # the colon is not read as a graphviz port: no third node
    assert len(edges_by_title(root)) == 2  # entry arrow and a:b -> say "hi"...
    assert any('say "hi"\\now' in texts(g) for g in nodes.values())


# -- edges ------------------------------------------------------------------------------------------
def test_edges_have_stable_ids_and_kind_classes(svg_root):
    edges = edges_by_title(svg_root)
    (work_agg,) = edges["work->agg"]
    assert work_agg.get("id") == "edge-work-agg-0"
    assert classes(work_agg) == {"edge", "dispatch"}
    assert classes(edges["fast->agg"][0]) == {"edge", "parallel"}
    assert classes(edges["agg->done"][0]) == {"edge", "human"}
    assert classes(edges["review->done"][0]) == {"edge", "sub_blueprint"}
    assert classes(edges["start->work"][0]) == {"edge", "transition"}


def test_condition_and_dispatch_labels(svg_root):
    assert "[initial_data.x == 1]" in edge_labels(svg_root, "start->fast")
    assert edge_labels(svg_root, "start->work") == {"[otherwise]"}  # the default handler's, beside a .when()
    assert edge_labels(svg_root, "work->agg") == {"success"}
    assert edge_labels(svg_root, "work->bad") == {"failure"}
    assert edge_labels(svg_root, "fast->agg") == {"all done"}
    assert edge_labels(svg_root, "agg->done") == {"approved"}


def test_long_conditions_are_wrapped_with_the_full_text_as_tooltip(svg_root):
    (review_done,) = edges_by_title(svg_root)["review->done"]
    lines = [t for t in texts(review_done) if t != "success"]
    assert lines == ["[initial_data.customer.segment ==", "'enterprise' and", "initial_data.total > 1000]"]
    assert all(len(line) <= GraphConfig().label_width + 1 for line in lines)
    tooltips = [a.get(XLINK_TITLE) for a in review_done.iter(f"{SVG}a")]
    assert tooltips == [f"when {LONG_CONDITION}"]
    assert shorten("context.a == 1") == "a == 1"
    assert shorten("x" * 50, 10) == "x" * 9 + "…"
    assert wrap_condition("context.a == 1") == ["[a == 1]"]
    # Past max_lines the label ends after a whole word; a word is never cut, even one wider than a line.
    assert wrap_condition("context.a == 1 " * 20, 20, 2) == ["[a == 1 a == 1 a == 1", "a == 1 a == 1 a == 1 …]"]
    long_name = "context.initial_data." + "x" * 40
    assert wrap_condition(f"{long_name} == 1", 20) == ["[initial_data." + "x" * 40, "== 1]"]


def test_human_and_sub_blueprint_edges_are_dashed(svg_root):
    edges = edges_by_title(svg_root)

    def dashed(title_: str) -> bool:
        return all(p.get("stroke-dasharray") for g in edges[title_] for p in g.iter(f"{SVG}path"))

    assert dashed("agg->done")
    assert dashed("review->done")
    assert not dashed("work->agg")


# -- SVG for inlining -------------------------------------------------------------------------------
def test_svg_is_inline_and_theme_neutral():
    svg = blueprint_svg(make_blueprint())
    assert svg.lstrip().startswith("<svg")
    assert "<?xml" not in svg
    assert "<!DOCTYPE" not in svg
    root = parse(svg)
    assert root.get("fill") == "currentColor"
    colours = {e.get(a) for e in root.iter() for a in ("fill", "stroke")} - {None}
    assert not colours & {"black", "#000000", "white", "#ffffff"}


def test_svg_cache_returns_the_same_object_until_the_version_changes():
    bp = make_blueprint()
    first = blueprint_svg(bp)
    assert blueprint_svg(bp) is first
    assert bp._repr_svg_() is first
    version = bp.version

    @bp.handler_for("bad")
    async def bad(context):
        context.actions.transition_to("done")

    assert bp.version != version
    second = blueprint_svg(bp)
    assert second is not first
    assert "unknown" not in classes(nodes_by_title(parse(second))["bad"])
    assert "bad->done" in edges_by_title(parse(second))


def test_svg_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(graph_render, "SVG_CACHE_SIZE", 2)
    first = blueprint_svg(make_blueprint("one"))
    blueprint_svg(make_blueprint("two"))
    blueprint_svg(make_blueprint("three"))
    again = blueprint_svg(make_blueprint("one"))
    assert again is not first  # evicted, rendered again
    assert again == first


def test_live_data_in_a_rendered_svg():
    model = extract(make_blueprint(), job_state="agg", job_status="waiting", visits={"start": 1, "work": 1, "agg": 1})
    root = parse(render_svg(model))
    assert {"active", "status-waiting", "visited"} <= classes(nodes_by_title(root)["agg"])
    assert "taken" in classes(edges_by_title(root)["work->agg"][0])
    assert "taken" not in classes(edges_by_title(root)["work->bad"][0])


def node_of(model: GraphModel, state: str) -> NodeModel:
    node = model.node(state)
    assert node is not None, f"no node for {state!r}"
    return node


# -- extract ----------------------------------------------------------------------------------------
def test_extract_without_live_data():
    bp = make_blueprint()
    model = extract(bp)
    assert (model.blueprint, model.version) == ("orders", bp.version)
    assert [n.id for n in model.nodes] == ["start", "fast", "work", "agg", "review", "done", "bad"]
    start, agg, bad = node_of(model, "start"), node_of(model, "agg"), node_of(model, "bad")
    assert (start.is_start, start.is_end) == (True, False)
    assert agg.is_aggregator
    assert (bad.unknown, bad.dom_id) == (True, "node-bad")
    assert all(n.count == 0 and not n.active and n.status is None for n in model.nodes)
    conditional = next(e for e in model.edges if e.target == "fast")
    assert conditional.condition == "context.initial_data.x == 1"
    assert (conditional.kind, conditional.dom_id) == ("transition", "edge-start-fast-0")
    failure = next(e for e in model.edges if e.target == "bad")
    assert (failure.kind, failure.label) == ("dispatch", "failure")


def test_extract_with_counts_job_state_and_visits():
    model = extract(
        make_blueprint(),
        counts={"work": 3, "agg": 1},
        job_state="agg",
        job_status="running",
        visits={"start": 1, "work": 2, "agg": 2},
    )
    work, agg, fast = node_of(model, "work"), node_of(model, "agg"), node_of(model, "fast")
    assert (work.count, work.visits, work.active) == (3, 2, False)
    assert (agg.active, agg.status, agg.count) == (True, "running", 1)
    assert (fast.visits, fast.active) == (0, False)
    taken = {(e.source, e.target): e for e in model.edges if e.taken}
    assert set(taken) == {("start", "work"), ("work", "agg")}
    assert taken["work", "agg"].visits == 2  # visits counted on the target
    assert all(e.visits == 0 for e in model.edges if not e.taken)


def test_job_status_enum_becomes_a_plain_status_class():
    from avtomatika import JobStatus

    model = extract(make_blueprint(), job_state="work", job_status=JobStatus.WAITING_FOR_WORKER)
    work = node_of(model, "work")
    assert work.status == "waiting_for_worker"
    assert "status-waiting_for_worker" in work.classes


def test_a_job_in_a_state_the_graph_does_not_know_is_shown():
    model = extract(make_blueprint(), job_state="computed_elsewhere", job_status="running")
    node = node_of(model, "computed_elsewhere")
    assert (node.unknown, node.active) == (True, True)


def test_counts_show_in_dot_labels():
    dot = to_dot(extract(make_blueprint(), counts={"work": 3}))
    assert "3 jobs" in dot


def test_node_model_defaults():
    node = NodeModel("with space", "with space")
    assert node.dom_id == f"node-{slug('with space')}"
    assert node.classes == ["state"]
    assert EdgeModel("a", "b", "dispatch", "success", None, taken=True).classes == ["dispatch", "taken"]


# -- render_graph -----------------------------------------------------------------------------------
def test_render_graph_without_a_filename_returns_valid_dot():
    import graphviz

    dot = make_blueprint().render_graph()
    assert isinstance(dot, str)
    assert dot.lstrip().startswith("digraph")
    root = parse(graphviz.pipe("dot", "svg", dot.encode()).decode())  # dot accepts it
    assert "bad" in nodes_by_title(root)


def test_render_graph_writes_png_with_exactly_the_given_name(tmp_path):
    target = tmp_path / "x.png"
    written = make_blueprint().render_graph(str(target))
    assert written == str(target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_render_graph_writes_svg_by_its_extension(tmp_path):
    target = tmp_path / "x.svg"
    make_blueprint().render_graph(str(target))
    root = parse(target.read_text())
    assert root.tag == f"{SVG}svg"
    assert "agg" in nodes_by_title(root)
    assert [p.name for p in tmp_path.iterdir()] == ["x.svg"]


def test_render_blueprint_with_an_explicit_format(tmp_path):
    target = tmp_path / "graph"
    assert render_blueprint(make_blueprint(), target, "pdf") == str(target)
    assert target.read_bytes()[:5] == b"%PDF-"
    assert [p.name for p in tmp_path.iterdir()] == ["graph"]


def test_missing_dot_names_the_package_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    bp = make_blueprint()
    with pytest.raises(GraphvizNotFound, match="apt-get install graphviz") as caught:
        bp.render_graph(str(tmp_path / "x.png"))
    assert isinstance(caught.value, RuntimeError)
    with pytest.raises(GraphvizNotFound):
        blueprint_svg(bp)
    assert isinstance(bp.render_graph(), str)  # DOT text needs no dot program


# -- Mermaid ----------------------------------------------------------------------------------------
def test_mermaid():
    bp = make_blueprint()

    @bp.handler_for("needs alias")
    async def aliased(context):
        context.actions.transition_to("done")

    lines = [line.strip() for line in to_mermaid(extract(bp)).splitlines()]
    assert lines[0] == "stateDiagram-v2"
    assert "direction LR" in lines
    assert "[*] --> start" in lines
    assert "done --> [*]" in lines
    assert "start --> fast: [initial_data.x == 1]" in lines
    assert "work --> agg: success" in lines
    assert "class agg aggregator" in lines
    assert "class bad unknown" in lines
    (alias,) = [line for line in lines if line.startswith('state "needs alias" as ')]
    assert f"{alias.split()[-1]} --> done" in lines


# -- layering ---------------------------------------------------------------------------------------
def test_importing_the_graph_module_does_not_import_graphviz(tmp_path):
    script = "import sys, avtomatika.graph; print('graphviz' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "False"


def test_path_type_is_accepted(tmp_path):
    target = Path(tmp_path / "p.svg")
    assert render_blueprint(make_blueprint(), target) == str(target)
