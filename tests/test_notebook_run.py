"""Every notebook in notebooks/ runs top to bottom on a fresh kernel, and shows its widgets.

The kernel is the venv's ``python3`` (ipykernel installs its kernelspec into the venv), started by
nbclient; the notebooks need no network (the monitoring one serves on 127.0.0.1 and stops itself).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CELL_TIMEOUT_S = 90
#: What a notebook prints on its way (its story, told by the debugger's own log lines).
PRINTED = {
    "fan_out_and_approval": [
        "fan_out waiting_for_parallel_tasks",
        "aggregate running next: aggregate",
        "[2, 3, 4]",
        "approval waiting_for_human | Publish the report (score 9)?",
        "what followed is kept as branch 1 -> approval running",
        "redo to step 6 · approval · waiting_for_human · as left -> approval waiting_for_human",
        "(branch 2, left)",
        "publish finished 9",
        "fan_out running",
    ],
}
#: The state each notebook's debugger picture must show as current once the notebook has run.
PICTURED_STATE = {"fan_out_and_approval": "fan_out", "step_debugging": "validate"}


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_four_notebooks_are_there():
    assert {p.stem for p in notebooks()} >= {"authoring", "step_debugging", "monitoring", "fan_out_and_approval"}


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_and_shows_widgets(path: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's path migration warning otherwise
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
        allow_errors=False,
    )
    client.execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    views = [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
    assert views, f"{path.name} shows no widget"
    state = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for view in views:
        assert view["data"][WIDGET_VIEW]["model_id"] in state, "a shown widget has no saved state"
    pictures = []
    for cell in notebook.cells:  # each widget leaves a picture for viewers without its kernel
        shown = cell.get("outputs", [])
        for index, output in enumerate(shown):
            if WIDGET_VIEW in output.get("data", {}):
                pictures.append(shown[index + 1]["data"]["text/html"])
    assert len(pictures) == len(views)
    for picture in pictures:
        assert "avtomatika-static" in picture
        assert "<svg" in picture
    if path.stem in PICTURED_STATE:  # kept up to date by the later cells (update_display)
        active = re.compile(rf'<g id="node(?:-|&#45;){PICTURED_STATE[path.stem]}" class="[^"]*\bactive\b')
        assert any(active.search(picture) for picture in pictures)
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    for line in PRINTED.get(path.stem, []):
        assert line in printed
