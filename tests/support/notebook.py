"""Blueprints and readers for the notebook widget tests (no kernel: the widgets' models are driven directly),
and the condition tests' blueprint.

Graphs are read by parsing the SVG and finding nodes by their ``<title>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html import unescape
from typing import Any

from avtomatika import StateMachineBlueprint

SVG_NS = "{http://www.w3.org/2000/svg}"


def end_states(bp: StateMachineBlueprint, *names: str) -> StateMachineBlueprint:
    """``bp`` with an end state (a handler that does nothing) for each of ``names``."""
    for name in names:

        async def finish(context):
            pass

        bp.handler_for(name, is_end=True)(finish)
    return bp


def pipeline() -> StateMachineBlueprint:
    """validate -> resize (a worker task) -> review -> publish, or rejected."""
    bp = StateMachineBlueprint("nb_pipeline")

    @bp.handler_for("validate", is_start=True)
    async def validate(context, actions):
        if not context.initial_data.get("image"):
            actions.transition_to("rejected")
            return
        context.state_history["checked"] = True
        actions.transition_to("resize")

    @bp.handler_for("resize")
    async def resize(context, actions):
        actions.dispatch_task(
            "resize", {"image": context.initial_data["image"]}, transitions={"success": "review", "failure": "rejected"}
        )

    @bp.handler_for("review").when("context.initial_data.priority == 'high'")
    async def fast_review(context, actions):
        actions.transition_to("publish")

    @bp.handler_for("review")
    async def review(context, actions):
        context.state_history["score"] = context.state_history["width"] // 10
        actions.transition_to("publish")

    return end_states(bp, "publish", "rejected")


def report() -> StateMachineBlueprint:
    """Eight states: a .when() branch, one task, a fan-out of 3 into an aggregator, a human approval."""
    bp = StateMachineBlueprint("nb_report")

    @bp.handler_for("intake", is_start=True).when("context.initial_data.priority == 'rush'")
    async def rush(context, actions):
        actions.transition_to("express")

    @bp.handler_for("intake")
    async def intake(context, actions):
        actions.transition_to("extract")

    @bp.handler_for("express")
    async def express(context, actions):
        context.state_history["pages"] = ["summary"]
        actions.transition_to("fan_out")

    @bp.handler_for("extract")
    async def extract(context, actions):
        actions.dispatch_task(
            "extract_text",
            {"document": context.initial_data["document"]},
            transitions={"success": "fan_out", "failure": "rejected"},
        )

    @bp.handler_for("fan_out")
    async def fan_out(context, actions):
        for page in context.state_history["pages"]:
            actions.dispatch_task("analyze", {"page": page}, transitions={"success": "aggregate"})

    @bp.aggregator_for("aggregate")
    async def aggregate(context, actions):
        scores = [result["data"]["score"] for result in context.aggregation_results.values()]
        context.state_history["total"] = sum(scores)
        actions.transition_to("approval")

    @bp.handler_for("approval")
    async def approval(context, actions):
        total = context.state_history["total"]
        actions.await_human_approval(
            "notebook", f"Publish the report (score {total})?", transitions={"approve": "publish", "reject": "rejected"}
        )

    return end_states(bp, "publish", "rejected")


def amount_router() -> StateMachineBlueprint:
    """route: big_order when the amount is over 1000 (-> manual_review), else small_order; then done."""
    bp = StateMachineBlueprint("cond_orders")

    @bp.handler_for("route", is_start=True).when("context.initial_data.amount > 1000")
    async def big_order(context, actions):
        actions.transition_to("manual_review")

    @bp.handler_for("route")
    async def small_order(context, actions):
        actions.transition_to("done")

    @bp.handler_for("manual_review")
    async def manual_review(context, actions):
        actions.transition_to("done")

    return end_states(bp, "done")


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
