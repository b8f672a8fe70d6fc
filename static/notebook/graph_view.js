// The step debugger's graph (avtomatika.studio.notebook.graph_view.GraphView), an anywidget view.
// The kernel sends the marked SVG as `value`; this view only lays it out: zoom (fit to the width,
// never so small that a label drops under MIN_TEXT_PX), and a click on a state toggles its breakpoint
// in `breakpoints`, which the kernel turns into a new drawing.

const MIN_TEXT_PX = 10;
const STEP = 1.25;

function button(text, title) {
  const node = document.createElement("button");
  node.type = "button";
  node.className = "agv-button";
  node.textContent = text;
  node.title = title;
  return node;
}

function naturalSize(svg) {
  // graphviz writes width/height in points; CSS pixels are 4/3 of a point.
  const points = (name) => parseFloat(svg.getAttribute(name) || "0");
  return { width: (points("width") * 4) / 3, height: (points("height") * 4) / 3 };
}

function smallestText(svg) {
  let smallest = Infinity;
  for (const text of svg.querySelectorAll("text")) {
    const size = parseFloat(text.getAttribute("font-size") || "0");
    if (size > 0) smallest = Math.min(smallest, size);
  }
  return Number.isFinite(smallest) ? (smallest * 4) / 3 : 14;
}

function render({ model, el }) {
  el.classList.add("avtomatika-graph-view");
  const bar = document.createElement("div");
  bar.className = "agv-bar";
  const out = button("\u2212", "Zoom out");
  const fit = button("Fit", "Fit the width (labels stay readable)");
  const actual = button("1:1", "Actual size");
  const zoomIn = button("+", "Zoom in");
  const level = document.createElement("span");
  level.className = "agv-level";
  const hint = document.createElement("span");
  hint.className = "agv-hint";
  bar.append(out, fit, actual, zoomIn, level, hint);
  const viewport = document.createElement("div");
  viewport.className = "agv-viewport";
  const canvas = document.createElement("div");
  canvas.className = "agv-canvas";
  viewport.append(canvas);
  el.append(bar, viewport);

  function svg() {
    return canvas.querySelector("svg");
  }

  function scale() {
    const drawn = svg();
    if (!drawn) return 1;
    const zoom = model.get("zoom");
    if (zoom > 0) return zoom;
    const { width } = naturalSize(drawn);
    const floor = MIN_TEXT_PX / smallestText(drawn);
    const room = viewport.clientWidth || el.clientWidth || width;
    return Math.max(Math.min(1, room / width), floor);
  }

  function layout() {
    const drawn = svg();
    if (!drawn) return;
    const factor = scale();
    const { width, height } = naturalSize(drawn);
    drawn.style.width = `${width * factor}px`;
    drawn.style.height = `${height * factor}px`;
    drawn.style.maxWidth = "none";
    level.textContent = `${Math.round(factor * 100)}%${model.get("zoom") > 0 ? "" : " (fit)"}`;
  }

  function draw() {
    canvas.innerHTML = model.get("value");
    const clickable = model.get("clickable");
    hint.textContent = clickable ? "click a state to toggle its breakpoint" : "";
    el.classList.toggle("agv-clickable", clickable);
    layout();
  }

  function zoomBy(factor) {
    model.set("zoom", Math.min(4, Math.max(0.2, scale() * factor)));
    model.save_changes();
  }

  out.addEventListener("click", () => zoomBy(1 / STEP));
  zoomIn.addEventListener("click", () => zoomBy(STEP));
  fit.addEventListener("click", () => {
    model.set("zoom", 0);
    model.save_changes();
  });
  actual.addEventListener("click", () => {
    model.set("zoom", 1);
    model.save_changes();
  });
  canvas.addEventListener("click", (event) => {
    if (!model.get("clickable")) return;
    const node = event.target.closest("g.node.state");
    if (!node) return;
    const title = node.querySelector("title");
    const state = node.getAttribute("data-state") || (title ? title.textContent : "");
    if (!state) return;
    const current = model.get("breakpoints") || [];
    const next = current.includes(state) ? current.filter((s) => s !== state) : [...current, state];
    model.set("breakpoints", next);
    model.save_changes();
  });

  model.on("change:value", draw);
  model.on("change:zoom", layout);
  model.on("change:clickable", draw);
  const resized = new ResizeObserver(() => layout());
  resized.observe(viewport);
  draw();
  return () => resized.disconnect();
}

export default { render };
