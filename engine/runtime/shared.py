"""What the engine's moving parts share: storage, the committer, settings, blueprints, tracing, workers.

The runner, the result processor, the operations and the scheduler each take a :class:`Runtime`
rather than the whole engine: they see what they use, and nothing of the HTTP server, the process's
lifecycle or history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..models import Task, WorkerRecord, now
from ..observe.telemetry import Tracer
from ..storage.base import task_timeout_s
from .dispatch import WorkerChooser

if TYPE_CHECKING:
    from ..access import AccessRegistry
    from ..blueprint import StateMachineBlueprint
    from ..config import Config
    from ..server.channels import WorkerChannels
    from ..storage import Storage
    from .commits import Committer

#: How long the list of live workers that tasks are assigned from is reused.
WORKERS_CACHE_S = 0.5


@dataclass
class Runtime:
    """The engine's parts that stepping jobs, answering workers and operating on jobs need."""

    storage: Storage
    committer: Committer
    config: Config
    blueprints: dict[str, StateMachineBlueprint]
    access: AccessRegistry
    channels: WorkerChannels
    tracer: Tracer = field(default_factory=Tracer)
    chooser: WorkerChooser = field(default_factory=WorkerChooser)
    _workers_cache: tuple[float, list[WorkerRecord]] = (0.0, [])

    def task_timeout_s(self, task: Task) -> float:
        return task_timeout_s(task, self.config.WORKER_TIMEOUT_SECONDS)

    def client_info(self, client: str | None) -> dict[str, Any] | None:
        found = self.access.client_by_name(client)
        return found.public() if found is not None else None

    def workers_changed(self) -> None:
        """A worker registered or changed what it offers: the next assignment reads them afresh."""
        self._workers_cache = (0.0, [])

    async def assign_workers(self, tasks: list[Task]) -> None:
        """Give each task to a free eligible worker chosen by its strategy, if there is one."""
        cached_at, workers = self._workers_cache
        at = now()
        if at - cached_at > WORKERS_CACHE_S:
            workers = [w for w in await self.storage.list_workers() if w.alive(at)]
            self._workers_cache = (at, workers)
        if not workers:
            return
        self.chooser.assign(tasks, workers, await self.storage.worker_load())
