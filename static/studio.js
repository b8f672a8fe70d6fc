// Avtomatika Studio: the little JavaScript the pages need, no build step.
// 1. Graph marks: apply the live classes, count badges and visit counts carried by _graph_marks.html
//    (in the page and in SSE events) to the cached SVG, by toggling classes on stable ids.
// 2. Upserts: an SSE row or item whose id is already on the page replaces it; a new one is added
//    only when marked data-sse-new.
// 3. Connection state, select-all checkboxes.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";

  function byId(root, id) {
    return root.querySelector('[id="' + id.replace(/"/g, '\\"') + '"]');
  }

  function setClasses(el, classes) {
    var previous = (el.getAttribute("data-live") || "").split(" ").filter(Boolean);
    previous.forEach(function (c) { el.classList.remove(c); });
    classes.forEach(function (c) { el.classList.add(c); });
    el.setAttribute("data-live", classes.join(" "));
  }

  function badge(node, count, tone) {
    var found = node.querySelector(":scope > .live-badge");
    if (!count) { if (found) { found.remove(); } return; }
    if (!found) {
      var box = node.getBBox();
      found = document.createElementNS(SVGNS, "g");
      found.setAttribute("class", "live-badge");
      var circle = document.createElementNS(SVGNS, "circle");
      circle.setAttribute("cx", box.x + box.width - 2);
      circle.setAttribute("cy", box.y + 2);
      circle.setAttribute("r", 8);
      var text = document.createElementNS(SVGNS, "text");
      text.setAttribute("x", box.x + box.width - 2);
      text.setAttribute("y", box.y + 5.5);
      text.setAttribute("text-anchor", "middle");
      found.appendChild(circle);
      found.appendChild(text);
      node.appendChild(found);
    }
    found.querySelector("text").textContent = count > 99 ? "99+" : String(count);
    found.setAttribute("class", "live-badge " + (tone || ""));
  }

  function visits(edge, count) {
    var found = edge.querySelector(":scope > .visits");
    if (count < 2) { if (found) { found.remove(); } return; }
    if (!found) {
      var path = edge.querySelector("path");
      if (!path) { return; }
      var middle = path.getPointAtLength(path.getTotalLength() / 2);
      found = document.createElementNS(SVGNS, "text");
      found.setAttribute("class", "visits");
      found.setAttribute("x", middle.x + 4);
      found.setAttribute("y", middle.y - 4);
      edge.appendChild(found);
    }
    found.textContent = "\u00d7" + count;
  }

  function applyMarks(root) {
    (root || document).querySelectorAll(".graph-marks[data-graph]").forEach(function (marks) {
      document.querySelectorAll('[id="' + marks.dataset.graph + '"]').forEach(function (graph) {
        marks.querySelectorAll("[data-node]").forEach(function (m) {
          var node = byId(graph, m.dataset.node);
          if (!node) { return; }
          var classes = (m.dataset.class || "").split(" ").filter(Boolean);
          setClasses(node, classes);
          node.setAttribute("data-count", m.dataset.count || "0");
          node.setAttribute("data-title", m.title || "");
          var tone = classes.filter(function (c) { return c.indexOf("tone-") === 0; })[0];
          badge(node, parseInt(m.dataset.count || "0", 10), tone);
        });
        marks.querySelectorAll("[data-edge]").forEach(function (m) {
          var edge = byId(graph, m.dataset.edge);
          if (!edge) { return; }
          setClasses(edge, (m.dataset.class || "").split(" ").filter(Boolean));
          visits(edge, parseInt(m.dataset.visits || "0", 10));
        });
      });
    });
  }

  function upsert(event) {
    var message = event.detail;
    if (!message || typeof message.data !== "string") { return; }
    var box = document.createElement("template");
    box.innerHTML = message.data.trim();
    var element = box.content.firstElementChild;
    if (!element || !element.id || !element.hasAttribute("data-upsert")) { return; }
    var existing = document.getElementById(element.id);
    if (existing) {
      event.preventDefault();
      existing.replaceWith(element);
      htmx.process(element);
    } else if (!element.hasAttribute("data-sse-new")) {
      event.preventDefault();
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    applyMarks(document);
    document.body.addEventListener("htmx:sseBeforeMessage", upsert);
    document.body.addEventListener("htmx:sseMessage", function (e) { applyMarks(e.target); });
    document.body.addEventListener("htmx:afterSettle", function (e) { applyMarks(e.target); });
    document.body.addEventListener("htmx:sseOpen", function () {
      document.body.classList.remove("offline");
      document.body.setAttribute("data-live", "open");
    });
    document.body.addEventListener("htmx:sseError", function () {
      document.body.classList.add("offline");
      document.body.setAttribute("data-live", "reconnecting");
    });
    document.body.addEventListener("change", function (e) {
      var all = e.target.closest("[data-select-all]");
      if (!all) { return; }
      document.querySelectorAll('input[name="job_id"][form="' + all.dataset.selectAll + '"]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  });
})();
