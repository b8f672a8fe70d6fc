// Avtomatika Studio: the little JavaScript the pages need, no build step.
// 1. Graph marks: apply the classes and tooltips carried by _graph_marks.html (in the page and in SSE
//    events) to the cached SVG, by stable ids, and put its drawn marks (badges, notes, visit counts,
//    breakpoint dots: avtomatika.studio.marks draws them) in the anchors the SVG holds for them.
// 2. Upserts: an SSE row or item whose id is already on the page replaces it; a new one is added
//    only when marked data-sse-new. Open <details> stay open when their part of the page is replaced.
// 3. Graph clicks: a state's visits on a job page, its breakpoint panel on a blueprint's page, the jobs
//    in that state on the blueprints page.
// 4. The timeline: compact or every line, times in UTC, local time or since the job was created.
// 5. Time travel: the scrubber's steps, the label, back to now; copy buttons; branch filters.
// 6. Bulk selections (quarantine triage, jobs list): counts, groups, a text filter, the job arrived
//    for, live counts that never move the table (new jobs are announced), a reset once an action starts.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var store = window.localStorage || { getItem: function () { return null; }, setItem: function () {} };

  function byId(root, id) {
    return root.querySelector('[id="' + id.replace(/"/g, '\\"') + '"]');
  }

  function setClasses(el, classes) {
    var previous = (el.getAttribute("data-live") || "").split(" ").filter(Boolean);
    previous.forEach(function (c) { el.classList.remove(c); });
    classes.forEach(function (c) { el.classList.add(c); });
    el.setAttribute("data-live", classes.join(" "));
  }

  // The marks drawn by the server (avtomatika.studio.marks: badge, breakpoint dot, note, visit count),
  // put in the anchor the cached SVG holds for them in each node and edge.
  function overlay(el, markup) {
    var anchor = el.querySelector(":scope > svg.mark");
    if (anchor) { anchor.innerHTML = markup || ""; }
  }

  // What a hover shows: the breakdown, in a <title> of the node's shape and of its label (the node's
  // own <title> keeps the state's name, by which the graph's nodes are found).
  function tooltip(node, text) {
    node.querySelectorAll(":scope > path, :scope > polygon, :scope > ellipse, :scope > text:not(.node-note)").forEach(function (part) {
      var title = part.querySelector(":scope > title");
      if (!text) { if (title) { title.remove(); } return; }
      if (!title) { title = document.createElementNS(SVGNS, "title"); part.appendChild(title); }
      title.textContent = text;
    });
  }

  function applyOne(marks) {
    document.querySelectorAll('[id="' + marks.dataset.graph + '"]').forEach(function (graph) {
      marks.querySelectorAll("[data-node]").forEach(function (m) {
        var node = byId(graph, m.dataset.node);
        if (!node) { return; }
        setClasses(node, (m.dataset.class || "").split(" ").filter(Boolean));
        node.setAttribute("data-count", m.dataset.count || "0");
        node.setAttribute("data-state", m.dataset.state || "");
        overlay(node, m.dataset.overlay);
        tooltip(node, m.getAttribute("title"));
      });
      marks.querySelectorAll("[data-edge]").forEach(function (m) {
        var edge = byId(graph, m.dataset.edge);
        if (!edge) { return; }
        setClasses(edge, (m.dataset.class || "").split(" ").filter(Boolean));
        overlay(edge, m.dataset.overlay);
      });
    });
  }

  // While the scrubber shows the past, the job's live marks wait; "Now" applies them again.
  function applyMarks(root) {
    (root || document).querySelectorAll(".graph-marks[data-graph]").forEach(function (marks) {
      if (document.body.dataset.travel === "on" && marks.closest("#job-marks")) { return; }
      applyOne(marks);
    });
  }

  // An SSE message of elements with ids and data-upsert: each replaces the element of its id on the
  // page; one not there yet is added (at the list's start or end, as its hx-swap says) only when
  // marked data-sse-new. The timeline's rows come this way: the rows that changed, and the new ones.
  function upsert(event) {
    var message = event.detail;
    if (!message || typeof message.data !== "string") { return; }
    var box = document.createElement("template");
    box.innerHTML = message.data.trim();
    var elements = Array.prototype.slice.call(box.content.children);
    if (!elements.length || !elements.every(function (el) { return el.id && el.hasAttribute("data-upsert"); })) {
      return;
    }
    event.preventDefault();
    var target = event.target;
    var first = (target.getAttribute("hx-swap") || "").indexOf("afterbegin") === 0;
    elements.forEach(function (element) {
      var existing = document.getElementById(element.id);
      if (existing) {
        existing.replaceWith(element);
      } else if (element.hasAttribute("data-sse-new")) {
        if (first) { target.prepend(element); } else { target.appendChild(element); }
      } else {
        return;
      }
      htmx.process(element);
    });
    settled(target);
  }

  // Duration bars: placed on the job's whole span, which grows while it runs (rows sent later and
  // rows sent earlier share one scale).
  function layoutBars(root) {
    var timeline = document.getElementById("timeline");
    if (!timeline) { return; }
    var bars = document.querySelectorAll(".bar[data-start]");
    var t0 = parseFloat(timeline.dataset.t0 || "0");
    var t1 = parseFloat(timeline.dataset.t1 || "0");
    bars.forEach(function (bar) { t1 = Math.max(t1, parseFloat(bar.dataset.end || bar.dataset.start)); });
    var total = t1 - t0;
    if (!(total > 0)) { return; }
    bars.forEach(function (bar) {
      var start = parseFloat(bar.dataset.start);
      var middle = bar.dataset.middle ? parseFloat(bar.dataset.middle) : null;
      var end = bar.dataset.end ? parseFloat(bar.dataset.end) : t1;
      var parts = middle === null ? [["wait", start, end]] : [["wait", start, middle], ["run", middle, end]];
      bar.innerHTML = "";
      parts.forEach(function (p) {
        var left = Math.min(Math.max((p[1] - t0) / total, 0), 1);
        var width = Math.max(Math.min((p[2] - p[1]) / total, 1 - left), 0.004);
        var i = document.createElement("i");
        i.className = p[0];
        i.style.left = (left * 100).toFixed(2) + "%";
        i.style.width = (width * 100).toFixed(2) + "%";
        bar.appendChild(i);
      });
    });
  }

  // A held job's context being edited is not replaced by a live update of the same hold (a stream
  // that reconnects sends the panel again); an update that is another hold, or none, replaces it.
  function keepsEdits(event) {
    var box = event.target;
    var form = document.getElementById("hold-form");
    var message = event.detail;
    if (!box || box.id !== "job-hold-box" || !form || form.dataset.dirty !== "true" || !message) { return false; }
    var current = document.getElementById("job-hold");
    var incoming = /data-hold="([^"]*)"/.exec(message.data || "");
    return Boolean(current && incoming && incoming[1] === current.dataset.hold);
  }

  // -- open <details> survive a swap of the part of the page holding them --------------------------
  var openBefore = null;
  function rememberOpen(event) {
    var target = event.detail && (event.detail.elt || event.detail.target);
    openBefore = [];
    (target && target.querySelectorAll ? target : document).querySelectorAll("details[open][id]").forEach(function (d) {
      openBefore.push(d.id);
    });
  }
  function restoreOpen() {
    (openBefore || []).forEach(function (id) {
      var found = document.getElementById(id);
      if (found) { found.open = true; }
    });
  }

  // -- the timeline: compact or every line; UTC, local time or since created -----------------------
  function pad(n, size) { return String(n).padStart(size || 2, "0"); }
  function formatTimes(root) {
    var mode = store.getItem("avtomatika.time") || "utc";
    (root || document).querySelectorAll("time.t[data-t]").forEach(function (el) {
      var t = parseFloat(el.dataset.t);
      var d = new Date(t * 1000);
      if (mode === "since" && el.dataset.t0) {
        el.textContent = "+" + since(t - parseFloat(el.dataset.t0));
      } else if (mode === "local") {
        var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
        el.textContent = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
          pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + "." + pad(d.getMilliseconds(), 3) + " " + zone;
      } else {
        el.textContent = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
          pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + "." + pad(d.getUTCMilliseconds(), 3) + " UTC";
      }
    });
    document.querySelectorAll("[data-time-mode]").forEach(function (s) { s.value = mode; });
  }
  function since(seconds) {
    if (seconds < 1) { return Math.round(seconds * 1000) + " ms"; }
    if (seconds < 60) { return seconds.toFixed(seconds < 10 ? 2 : 1) + " s"; }
    var m = Math.floor(seconds / 60), s = Math.floor(seconds % 60);
    if (m < 60) { return m + " min " + s + " s"; }
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }
  function timelineMode(mode) {
    var box = document.getElementById("timeline");
    if (!box) { return; }
    mode = mode || store.getItem("avtomatika.timeline") || "compact";
    box.dataset.mode = mode;
    box.querySelectorAll("[data-timeline-mode]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.timelineMode === mode));
    });
  }

  // -- time travel ----------------------------------------------------------------------------------
  function travel() { return document.getElementById("travel-range"); }
  function travelLabel() {
    var range = travel();
    var label = document.querySelector("[data-travel-label]");
    if (!range || !label) { return; }
    var live = range.value === range.max;
    label.textContent = (live ? "now · " : "then · ") + "line " + range.value + " of " + range.max;
    document.body.dataset.travel = live ? "off" : "on";
    if (live) {
      var moment = document.getElementById("moment");
      if (moment) { moment.innerHTML = ""; }
      applyMarks(document.getElementById("job-marks"));
    }
  }
  function moveTravel(value) {
    var range = travel();
    if (!range) { return; }
    range.value = String(Math.min(Math.max(value, parseInt(range.min, 10)), parseInt(range.max, 10)));
    range.dispatchEvent(new Event("input", { bubbles: true }));
    travelLabel();
  }
  function linesArrived() {
    var range = travel();
    if (!range) { return; }
    var last = 0;
    document.querySelectorAll("#timeline-lines li[data-seq]").forEach(function (li) {
      last = Math.max(last, parseInt(li.dataset.seq, 10));
    });
    if (last > parseInt(range.max, 10)) {
      var atEnd = range.value === range.max;
      range.max = String(last);
      if (atEnd) { range.value = String(last); }
      travelLabel();
    }
  }

  // -- clicks ---------------------------------------------------------------------------------------
  function copy(text, button) {
    function done() { button.classList.add("copied"); setTimeout(function () { button.classList.remove("copied"); }, 900); }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
      return;
    }
    var area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
    done();
  }

  function stateClicked(node) {
    var box = node.closest("[data-graph-box]");
    var state = node.getAttribute("data-state");
    if (!box || !state) { return; }
    var prefix = document.body.dataset.prefix || "";
    if (box.dataset.graphMode === "path") {
      var travelBox = document.getElementById("travel");
      var job = travelBox ? travelBox.dataset.job : document.body.dataset.job;
      var detail = document.getElementById("state-detail");
      if (!job || !detail) { return; }
      detail.hidden = false;
      htmx.ajax("GET", prefix + "/jobs/" + job + "/states/" + encodeURIComponent(state), { target: "#state-detail" });
      detail.scrollIntoView({ behavior: "smooth", block: "nearest" });
    } else if (box.dataset.graphMode === "breakpoints") {
      var panel = document.getElementById("state-detail");
      var blueprint = node.closest("[data-blueprint]");
      if (!panel || !blueprint) { return; }
      blueprint.querySelectorAll("g.node.picked").forEach(function (n) { n.classList.remove("picked"); });
      node.classList.add("picked");
      panel.hidden = false;
      htmx.ajax("GET", prefix + "/blueprints/" + encodeURIComponent(blueprint.dataset.blueprint) + "/states/" +
        encodeURIComponent(state), { target: "#state-detail" });
    } else {
      var card = node.closest("[data-blueprint]");
      if (card) {
        window.location = prefix + "/jobs?blueprint=" + encodeURIComponent(card.dataset.blueprint) + "&state=" + encodeURIComponent(state);
      }
    }
  }

  function filterBranches(id) {
    var table = document.getElementById(id);
    if (!table) { return; }
    var status = (document.querySelector('[data-branch-filter="' + id + '"]') || {}).value || "";
    var text = ((document.querySelector('[data-branch-search="' + id + '"]') || {}).value || "").toLowerCase();
    table.querySelectorAll("tbody tr").forEach(function (row) {
      var shown = (!status || row.dataset.status === status) && (!text || row.textContent.toLowerCase().indexOf(text) !== -1);
      row.hidden = !shown;
    });
  }

  function onClick(e) {
    var button = e.target.closest("button.copy[data-copy]");
    if (button) { e.preventDefault(); copy(button.dataset.copy, button); return; }
    var mode = e.target.closest("[data-timeline-mode]");
    if (mode) { store.setItem("avtomatika.timeline", mode.dataset.timelineMode); timelineMode(mode.dataset.timelineMode); return; }
    var step = e.target.closest("[data-travel-step]");
    if (step && travel()) { moveTravel(parseInt(travel().value, 10) + parseInt(step.dataset.travelStep, 10)); return; }
    if (e.target.closest("[data-travel-live]") && travel()) { moveTravel(parseInt(travel().max, 10)); return; }
    var close = e.target.closest("[data-close]");
    if (close) { var target = document.querySelector(close.dataset.close); if (target) { target.hidden = true; } return; }
    var node = e.target.closest("svg.avtomatika-graph g.node.state");
    if (node) { stateClicked(node); }
  }

  function onChange(e) {
    if (selectionClicked(e.target)) { return; }
    if (e.target.matches("[data-time-mode]")) { store.setItem("avtomatika.time", e.target.value); formatTimes(document); return; }
    if (e.target.matches("[data-branch-filter]")) { filterBranches(e.target.dataset.branchFilter); }
  }


  // -- bulk selections ------------------------------------------------------------------------------
  function jobBoxes(formId) {
    return Array.prototype.slice.call(document.querySelectorAll('input[name="job_id"][form="' + formId + '"]'));
  }
  function usable(box) { var row = box.closest("tr"); return !box.disabled && !(row && row.hidden); }

  function selectionChanged() {
    document.querySelectorAll("form[data-bulk-form]").forEach(function (form) {
      var boxes = jobBoxes(form.id);
      var whole = {}, inWhole = 0;  // groups selected whole ("select all N"): their count, not their rows'
      document.querySelectorAll('input[name="signature"][form="' + form.id + '"]').forEach(function (w) {
        if (w.checked) { whole[w.value] = true; inWhole += Number(w.dataset.n) || 0; }
      });
      var n = inWhole + boxes.filter(function (b) { return b.checked && usable(b) && !whole[b.closest("tr").dataset.group]; }).length;
      var byFilter = form.querySelector('[name="select"][value="filter"]');
      var all = byFilter && byFilter.checked;
      document.querySelectorAll('[data-selected-count="' + form.id + '"]').forEach(function (el) {
        el.textContent = all ? "all matching the filter" : n + " selected";
      });
      form.querySelectorAll("[data-needs-selection]").forEach(function (b) { b.disabled = !(n || all); });
      boxes.forEach(function (b) { b.closest("tr").classList.toggle("picked", b.checked); });
    });
    document.querySelectorAll("[data-select-group]").forEach(function (g) {
      var boxes = jobBoxes("triage").filter(function (b) { return usable(b) && b.closest("tr").dataset.group === g.dataset.selectGroup; });
      g.checked = boxes.length > 0 && boxes.every(function (b) { return b.checked; });
    });
  }

  function selectionClicked(target) {
    var group = target.closest("[data-select-group]");
    var shown = target.closest("[data-select-shown]");
    if (!group && !shown && !target.matches('input[name="job_id"], input[name="signature"], [name="select"]')) { return false; }
    if (group || shown) {
      var formId = shown ? shown.dataset.selectShown : "triage";
      jobBoxes(formId).forEach(function (b) {
        if (usable(b) && (!group || b.closest("tr").dataset.group === group.dataset.selectGroup)) { b.checked = target.checked; }
      });
    }
    selectionChanged();
    return true;
  }

  function filterTriage(input) {
    var text = input.value.trim().toLowerCase();
    var shown = 0;
    document.querySelectorAll("tbody.q-group").forEach(function (group) {
      var any = false;
      group.querySelectorAll("tr.q-row").forEach(function (row) {
        var match = !text || row.textContent.toLowerCase().indexOf(text) !== -1;
        row.hidden = !match;
        if (!match) { row.querySelector('input[name="job_id"]').checked = false; } else { shown += 1; any = true; }
      });
      group.hidden = !any;
    });
    var count = document.querySelector("[data-shown-count]");
    if (count) { count.textContent = text ? shown + " shown" : ""; }
    selectionChanged();
  }

  // The live counts: group counts and the total follow; rows that left quarantine are dimmed in place;
  // jobs quarantined since the page was drawn are announced ("3 new — show"), never inserted.
  function quarantineCounts() {
    var counts = document.getElementById("quarantine-counts");
    if (!counts || !counts.dataset.total) { return; }
    document.querySelectorAll("[data-quarantine-total]").forEach(function (el) { el.textContent = counts.dataset.total; });
    var byGroup = {};
    counts.querySelectorAll("[data-count-of]").forEach(function (c) { byGroup[c.dataset.countOf] = c.dataset.n; });
    document.querySelectorAll("[data-group-count]").forEach(function (el) { el.textContent = byGroup[el.dataset.groupCount] || "0"; });
    var left = {};
    (counts.querySelector("[data-left]").dataset.left || "").split(" ").filter(Boolean).forEach(function (id) { left[id] = true; });
    document.querySelectorAll("tr.q-row[data-job]").forEach(function (row) {
      if (!left[row.dataset.job]) { return; }  // a row once dimmed stays so: "show" redraws the table
      row.classList.add("left");
      row.querySelector(".left-note").hidden = false;
      var box = row.querySelector('input[name="job_id"]');
      if (box) { box.disabled = true; box.checked = false; }
    });
    var arrived = Number(counts.dataset.new) || 0;
    var notice = document.querySelector("[data-arrivals]");
    if (notice) {
      notice.hidden = arrived === 0;
      notice.querySelector("[data-arrivals-count]").textContent = arrived;
      notice.querySelector("[data-arrivals-show]").href = window.location.pathname + window.location.search;
    }
    selectionChanged();
  }

  function bulkStarted() {
    document.querySelectorAll('input[name="job_id"], input[name="signature"], [data-select-group], [data-select-shown], [name="select"][value="filter"]').forEach(function (b) {
      b.checked = false;
    });
    var review = document.getElementById("bulk-review");
    if (review) { review.innerHTML = ""; }
    selectionChanged();
  }

  function arrivedAt() {
    var row = document.querySelector("tr[data-arrived]");
    if (row) { row.scrollIntoView({ block: "center" }); }
  }

  function settled(root) {
    layoutBars(root);
    applyMarks(root);
    if (document.body.dataset.travel === "on") { applyMarks(document.getElementById("moment-marks")); }
    formatTimes(root);
    restoreOpen();
    linesArrived();
    quarantineCounts();
  }

  document.addEventListener("DOMContentLoaded", function () {
    applyMarks(document);
    layoutBars(document);
    timelineMode();
    formatTimes(document);
    travelLabel();
    selectionChanged();
    arrivedAt();
    var body = document.body;
    body.addEventListener("bulk-started", bulkStarted);
    body.addEventListener("htmx:sseBeforeMessage", function (e) {
      if (keepsEdits(e)) { e.preventDefault(); return; }
      rememberOpen(e); upsert(e); restoreOpen();
    });
    body.addEventListener("htmx:beforeSwap", rememberOpen);
    body.addEventListener("htmx:sseMessage", function (e) { settled(e.target); });
    body.addEventListener("htmx:afterSettle", function (e) { settled(e.target); timelineMode(); });
    body.addEventListener("htmx:sseOpen", function () {
      body.classList.remove("offline");
      body.setAttribute("data-live", "open");
    });
    body.addEventListener("htmx:sseError", function () {
      body.classList.add("offline");
      body.setAttribute("data-live", "reconnecting");
    });
    body.addEventListener("click", onClick);
    body.addEventListener("change", onChange);
    body.addEventListener("input", function (e) {
      if (e.target.matches("[data-branch-search]")) { filterBranches(e.target.dataset.branchSearch); }
      if (e.target === travel()) { travelLabel(); }
      if (e.target.matches("[data-triage-filter]")) { filterTriage(e.target); }
      if (e.target.matches("[data-hold-editor]") && e.target.form) { e.target.form.dataset.dirty = "true"; }
    });
  });
})();
