"""``JobHistory``: the studio's time travel in a notebook, for any job an engine has seen.

A slider over the job's timeline lines; at each line the graph it ran on is drawn as the job was then
(its state, the edges it had taken, its fan-out's branches), with ``state_history``, the task and its
answer then. Everything comes from the engine's read model (``engine.reads``), so it works for a
finished job from history alone, also after the engine that ran it stopped; the panel is the studio's
own partial (``_moment.html``), rendered by the studio's templates.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
from traitlets import Int, Unicode

from avtomatika.engine import OrchestratorEngine
from avtomatika.errors import DebuggerError
from avtomatika.reads import JobDetail, Moment
from avtomatika.studio.contexts import MomentContext
from avtomatika.studio.graphs import JobGraph, moment_path
from avtomatika.studio.notebook import _render
from avtomatika.studio.notebook._loop import Background
from avtomatika.studio.notebook._snapshot import PicturedWidget


class JobHistory(PicturedWidget):
    """One job's history, line by line.

    Args:
        engine: The engine that runs (or ran) the job; its history is read.
        job_id: The job.
        studio_url: Where the studio is served, for links (none by default).
    """

    seq = Int(0, help="The timeline line shown: the job as it was right after it.").tag(sync=True)
    last_seq = Int(0, help="The timeline's last line.").tag(sync=True)
    state = Unicode("", help="The job's state at the line shown.").tag(sync=True)
    status = Unicode("", help="The job's status at the line shown.").tag(sync=True)

    def __init__(self, engine: OrchestratorEngine, job_id: str, *, studio_url: str = "", **kwargs: Any) -> None:
        self.engine = engine
        self.job_id = job_id
        self.detail: JobDetail | None = None
        self.moment: Moment | None = None
        self._graph: JobGraph | None = None
        self._studio_url = studio_url
        self.slider = widgets.IntSlider(
            min=1, max=1, value=1, description="line", continuous_update=False, layout={"width": "100%"}
        )
        self.graph = widgets.HTML()
        self.panel = widgets.HTML()
        self.message = widgets.HTML()
        self._background = Background("job-history", self._show_error)
        self.slider.observe(lambda change: self._background.spawn(self.show(change["new"]), "show"), names="value")
        super().__init__(
            f"History of job {job_id[:8]}",
            "avtomatika-job-history",
            [self.graph, self.slider, self.panel, self.message],
            **kwargs,
        )
        self._background.spawn(self.load(), "load")

    def __repr__(self) -> str:
        return f"JobHistory({self.job_id!r}, seq={self.seq}/{self.last_seq})"

    def _picture_parts(self) -> list[str]:
        return [self.graph.value, self.panel.value]

    async def load(self) -> JobDetail:
        """Read the job and its timeline again (new lines included), and show its last line."""
        detail = await self.engine.reads.detail(self.job_id, tasks=False)
        if detail is None:
            raise DebuggerError(f"job {self.job_id} is unknown to this engine and its history")
        if detail.timeline is None or not detail.timeline.lines:
            raise DebuggerError(f"history has no line of job {self.job_id} yet")
        self.detail, self._graph = detail, await JobGraph.of(self.engine, detail)
        self.last_seq = detail.timeline.last_seq
        self.slider.max = self.last_seq
        if self.slider.value != self.last_seq:
            self.slider.value = self.last_seq  # shown by the slider's observer
        else:
            await self.show(self.last_seq)
        return detail

    async def show(self, seq: int) -> Moment:
        """The job as it was right after line ``seq``: the graph, then state_history and the task then."""
        detail = self.detail if self.detail is not None else await self.load()
        assert detail.timeline is not None, "load() refuses a job without lines"
        assert self._graph is not None
        moment = detail.timeline.at(seq)
        self.moment, self.seq, self.state, self.status = moment, moment.seq, moment.state, moment.status
        if self.slider.value != moment.seq:
            self.slider.value = moment.seq
        model = self._graph.ran_on
        marks = self._graph.marks(moment_path(moment))
        drawn = _render.model_graph_html(model, marks) if model is not None else ""
        self.graph.value = _render.page(drawn, css_class="path-mode")
        context = MomentContext(detail.job, moment, None, detail.timeline.last_seq)
        self.panel.value = _render.page(_render.render("_moment.html", context, self._studio_url))
        self.message.value = ""
        self._redraw_picture()
        return moment

    async def settled(self) -> None:
        """Wait until the readings and drawings under way have finished."""
        await self._background.wait()

    def _show_error(self, error: BaseException) -> None:
        self.message.value = _render.page(f"<p class='error'>{_render.esc(error)}</p>")
