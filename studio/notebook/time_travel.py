"""Back, Redo and edits: the step debugger's controls for moving along the job's time line.

:class:`BackControls` offers every checkpoint (the current line's, newest first, then the branches
left behind), defaulting to the step before the last one, with an optional ``state_history`` to go
back with; :class:`StateEditor` changes ``state_history`` where the job is now. They only collect
input: the debugger runs it (``DebugSession.restore``, ``redo``, ``edit``).
"""

from __future__ import annotations

import json
from typing import Any

import ipywidgets as widgets

from avtomatika.debugger.checkpoints import Checkpoint, CheckpointTree

from .pending import parse_object


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


class BackControls:
    """A checkpoint to go back to, Back, Redo (``row``), and the ``state_history`` to go back with (``editor``)."""

    def __init__(self) -> None:
        self.choice = widgets.Dropdown(options=[], description="Back to", layout={"width": "28em"})
        self.back_button = widgets.Button(description="Back", icon="undo", tooltip="Restore the job as it was then")
        self.redo_button = widgets.Button(
            description="Redo", icon="repeat", tooltip="Forward again along the branch Back left"
        )
        self.history = widgets.Textarea(
            description="state_history",
            placeholder="state_history to go back with (JSON); left as it was, it is restored unchanged",
            layout={"width": "100%", "height": "7em"},
        )
        self._timeline: CheckpointTree | None = None
        self._default: int | None = None
        self.choice.observe(self._chosen, names="value")
        #: The controls, for the debugger's toolbar; the editor goes in a section of its own.
        self.row = widgets.HBox([self.choice, self.back_button, self.redo_button])
        self.editor = widgets.Accordion([self.history], titles=("Go back with another state_history",))
        self.editor.selected_index = None

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The checkpoint chosen."""
        if self._timeline is None or self.choice.value is None:
            return None
        return self._timeline.checkpoints.get(self.choice.value)

    def show(self, timeline: CheckpointTree, steps_taken: int) -> None:
        """List the checkpoints; after every action the choice goes back to the previous step."""
        self._timeline = timeline
        on_line = timeline.line()
        options = [(c.label, c.id) for c in reversed(on_line)]
        options += [(f"branch {timeline.branch_of(c) or '?'} · {c.label}", c.id) for c in timeline.on_branches()]
        previous = timeline.previous(steps_taken)
        default = previous.id if previous is not None else None
        if list(self.choice.options) != options or default != self._default:
            self.choice.options = options
            self.choice.value = default
            self._default = default
        self.redo_button.disabled = not timeline.redo_path
        self.back_button.disabled = not options

    def read(self) -> tuple[int, dict[str, Any] | None]:
        """The checkpoint chosen and the ``state_history`` to restore (None: unchanged)."""
        checkpoint = self.checkpoint
        if checkpoint is None:
            raise ValueError("choose a step to go back to")
        text = self.history.value.strip()
        edited = parse_object(text, "state_history") if text else None
        return checkpoint.id, None if edited == checkpoint.job.state_history else edited

    def _chosen(self, change: dict[str, Any]) -> None:
        checkpoint = self.checkpoint
        if checkpoint is not None:
            self.history.value = _pretty(checkpoint.job.state_history)


class StateEditor(widgets.VBox):
    """``state_history`` where the job is now, to edit and save (the next step sees it)."""

    def __init__(self) -> None:
        self.text = widgets.Textarea(layout={"width": "100%", "height": "8em"})
        self.save_button = widgets.Button(
            description="Save state_history", icon="save", tooltip="Edit the job here, at the current step"
        )
        self._shown: Any = None
        super().__init__([self.text, self.save_button])

    def show(self, state_history: dict[str, Any]) -> None:
        """Show the job's ``state_history``, unless it is being edited (the text differs from what was shown)."""
        if self._shown is not None and self.text.value != _pretty(self._shown):
            return
        self._shown = dict(state_history)
        self.text.value = _pretty(state_history)

    def read(self) -> dict[str, Any]:
        """The edited ``state_history``."""
        return parse_object(self.text.value.strip() or "{}", "state_history")

    def saved(self) -> None:
        """The edit was applied: show the job's value again from now on."""
        self._shown = None
