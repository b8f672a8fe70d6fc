"""The ``context`` a handler receives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actions import ActionFactory


class AttrDict(dict[str, Any]):
    """A dict whose keys can also be read as attributes: ``context.initial_data.type``.

    Nested dicts read as attributes come back as ``AttrDict`` too: the nested dict is replaced by
    its ``AttrDict`` in place, so a change made through it (``state_history.stats["n"] += 1``) is
    kept. A missing key read as an attribute raises ``AttributeError`` (``.get()`` is there for
    optional keys).
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        if type(value) is dict:
            value = self[name] = AttrDict(value)
        return value


class DataStores:
    """The blueprint's data stores, by name: ``context.data_stores.cache``."""

    __slots__ = ("_stores",)

    def __init__(self, stores: dict[str, Any]) -> None:
        self._stores = stores

    def __getattr__(self, name: str) -> Any:
        try:
            return self._stores[name]
        except KeyError:
            known = ", ".join(sorted(self._stores)) or "none"
            raise AttributeError(f"no data store named {name!r} (known: {known})") from None

    def __getitem__(self, name: str) -> Any:
        return self._stores[name]

    def __contains__(self, name: object) -> bool:
        return name in self._stores

    def __repr__(self) -> str:
        return f"DataStores({sorted(self._stores)})"


class JobContext:
    """Everything a handler knows about its job, and ``actions`` to say what happens next.

    Attributes:
        job_id: The job's id.
        current_state: The state whose handler is running.
        initial_data: The data the job was created with (read-only by convention).
        state_history: A dict carried from step to step; workers' result data is merged into it.
        actions: Call exactly one kind of action on it (see :mod:`avtomatika.runtime.actions`).
        aggregation_results: In an aggregation state, ``{task_id: result}`` of every branch.
        data_stores: The blueprint's data stores as attributes.
        client: The client that created the job (its name and plan), or None.
    """

    __slots__ = (
        "actions",
        "aggregation_results",
        "blueprint_name",
        "client",
        "current_state",
        "data_stores",
        "initial_data",
        "job_id",
        "state_history",
    )

    def __init__(
        self,
        *,
        job_id: str,
        blueprint_name: str,
        current_state: str,
        initial_data: dict[str, Any],
        state_history: dict[str, Any],
        actions: ActionFactory,
        data_stores: DataStores,
        client: dict[str, Any] | None = None,
        aggregation_results: dict[str, Any] | None = None,
    ) -> None:
        self.job_id = job_id
        self.blueprint_name = blueprint_name
        self.current_state = current_state
        self.initial_data = AttrDict(initial_data)
        self.state_history = AttrDict(state_history)
        self.actions = actions
        self.data_stores = data_stores
        self.client = AttrDict(client) if client is not None else None
        self.aggregation_results = aggregation_results if aggregation_results is not None else {}

    def __repr__(self) -> str:
        return f"JobContext(job_id={self.job_id!r}, blueprint={self.blueprint_name!r}, state={self.current_state!r})"
