"""Label values of the metrics, bounded: a worker or a blueprint cannot make the exposition grow
without end (``METRICS_MAX_LABEL_VALUES``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

logger = logging.getLogger(__name__)

#: The value standing for every value past the cap.
OTHER = "_other"


class LabelCap:
    """The values of one label, at most ``limit`` distinct; later ones are counted under ``_other``.

    For counters and histograms, whose series must not disappear once exported.
    """

    def __init__(self, label: str, limit: int) -> None:
        self.label = label
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        if len(self._seen) == self.limit:
            logger.warning("metrics: %d values of %s seen; new ones are counted as %s", self.limit, self.label, OTHER)
        return value


def queue_gauge(queues: dict[str, int], types: Iterable[str], limit: int) -> dict[str, int]:
    """Queue lengths to export: every type queued or taken by an alive worker (0 when idle), at most
    ``limit`` of them (those with tasks queued first, then by name), the rest summed under ``_other``.

    Computed afresh at each scrape, so the types of a worker that expired leave with it.
    """
    wanted = set(types) | set(queues)
    ordered = sorted(wanted, key=lambda t: (queues.get(t, 0) == 0, t))
    shown = {t: queues.get(t, 0) for t in ordered[:limit]}
    if len(ordered) > limit:
        shown[OTHER] = sum(queues.get(t, 0) for t in ordered[limit:])
    return shown
