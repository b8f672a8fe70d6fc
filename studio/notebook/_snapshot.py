"""A static picture under each widget, so a saved notebook still shows the graph and the last state.

A widget's output is only a reference to a model that lives in the kernel: reopened without it
(a saved notebook, nbviewer, GitHub), it shows "Error displaying widget: model not found" or nothing.
So each widget is displayed as two outputs: the live widget, then a plain ``text/html`` picture of it
(the graph as SVG, the status, the last step), re-published in place (``update_display``) every time
the widget re-draws. While the live widget is on the page, a CSS rule hides the picture (and, once it
is gone, the widget's "model not found" line); everywhere else the picture is what is seen.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from avtomatika.studio.notebook._render import page

#: Hides the picture next to a live view of the same widget, and the broken view next to the picture.
_LIVE_SWAP = """
:is(.jp-OutputArea, .output_wrapper, .output):has(.avtomatika-live) .avtomatika-static { display: none; }
:is(.jp-OutputArea, .output_wrapper, .output):has(.avtomatika-static)
  .jp-OutputArea-output.jupyter-widgets:not(:has(*)) { display: none; }
.avtomatika-static { border-left: 3px solid var(--muted); padding-left: .6em; }
.avtomatika-static .static-note { font-size: .85em; }
"""


def static_html(title: str, *parts: str) -> str:
    """The picture: ``parts`` (HTML) under a line saying it is a picture of the widget ``title``."""
    note = (
        f'<p class="muted static-note">{title}, as last drawn (a picture saved with the notebook: run the '
        "cell again for the live widget).</p>"
    )
    return f"<style>{_LIVE_SWAP}</style>" + page(note, *parts, css_class="avtomatika-static")


class StaticPicture:
    """Publishes one widget's picture next to it, and keeps it up to date.

    Args:
        title: What the picture shows, in words ("Step debugger of orders").
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self.display_id = f"avtomatika-{uuid.uuid4().hex}"
        self.shown = False
        self.html = ""

    def show(self, widget: Any, parts: list[str]) -> None:
        """Display ``widget`` and, under it, its picture (what ``_ipython_display_`` does)."""
        from IPython.display import display

        self.html = static_html(self.title, *parts)
        display(widget._repr_mimebundle_(), raw=True)  # display(widget) would come back here
        display(self._bundle(), raw=True, display_id=self.display_id)
        self.shown = True

    def update(self, parts: list[str]) -> None:
        """Re-draw the picture (every output showing it), once it has been displayed in a kernel."""
        self.html = static_html(self.title, *parts)
        if not self.shown or not _in_kernel():
            return
        from IPython.display import update_display

        update_display(self._bundle(), raw=True, display_id=self.display_id)

    def _bundle(self) -> dict[str, str]:
        return {"text/html": self.html, "text/plain": f"<{self.title}: the live widget needs its kernel>"}


class PicturedWidget(widgets.VBox):
    """A notebook widget displayed live, with its :class:`StaticPicture` under it.

    Args:
        title: What its picture shows, in words.
        css_class: The widget's own CSS class (``avtomatika-live`` is added too).
        children: Its widgets, top to bottom.

    Each subclass defines ``_picture_parts``: the HTML of what its picture shows, top to bottom.
    """

    _picture_parts: Callable[[], list[str]]

    def __init__(self, title: str, css_class: str, children: list[widgets.Widget], **kwargs: Any) -> None:
        self.picture = StaticPicture(title)
        super().__init__(children=children, **kwargs)
        self.add_class(css_class)
        self.add_class("avtomatika-live")

    def _ipython_display_(self) -> None:
        self.picture.show(self, self._picture_parts())

    def _redraw_picture(self) -> None:
        self.picture.update(self._picture_parts())


def _in_kernel() -> bool:
    try:
        from IPython.core.interactiveshell import InteractiveShell
    except ImportError:
        return False
    return InteractiveShell.initialized()
