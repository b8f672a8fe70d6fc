"""Blueprints: a job's state machine, written as decorated async handlers.

A blueprint only describes; the engine runs it. Problems are collected, not raised one at a time,
so ``validate()`` (and the notebook's view) can show all of them at once; ``check()`` raises
:class:`~avtomatika.errors.BlueprintInvalid` listing every error.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import logging
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .conditions import Condition, compile_condition
from .errors import BlueprintInvalid, ConditionError, ConditionEvaluationError, ConditionFailed, HandlerError
from .introspect import FoundEdge, condition_keys, edges_in_source, initial_data_keys
from .runtime.context import JobContext

logger = logging.getLogger(__name__)

#: Names a handler may take as parameters; each is filled from the context.
INJECTABLE = (
    "context",
    "actions",
    "job_id",
    "initial_data",
    "state_history",
    "data_stores",
    "client",
    "aggregation_results",
)

Handler = Callable[..., Any]


@dataclass(slots=True, frozen=True)
class Problem:
    """One thing wrong with a blueprint. Errors stop registration; warnings are only reported."""

    message: str
    state: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = f"state '{self.state}': " if self.state else ""
        return f"{where}{self.message}"


@dataclass(slots=True)
class HandlerSpec:
    state: str
    function: Handler
    condition: Condition | None = None
    condition_text: str | None = None
    condition_error: ConditionError | None = None
    is_aggregator: bool = False
    invoke: Callable[[JobContext], Any] = field(init=False, repr=False)
    signature_problem: str | None = field(default=None, init=False)
    #: The handler's ``__qualname__`` (its repr if it has none); every step records it.
    name: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.invoke, self.signature_problem = _build_invoker(self.function)
        name = getattr(self.function, "__qualname__", None)
        self.name = name if isinstance(name, str) else repr(self.function)

    def matches(self, context: JobContext) -> bool:
        return self.condition is None or self.condition.evaluate(context)


@dataclass(slots=True)
class StateInfo:
    name: str
    is_start: bool = False
    is_end: bool = False
    is_aggregator: bool = False
    conditional: list[HandlerSpec] = field(default_factory=list)
    default: HandlerSpec | None = None

    def handlers(self) -> list[HandlerSpec]:
        return [*self.conditional, *([self.default] if self.default else [])]


@dataclass(slots=True, frozen=True)
class Edge:
    source: str
    target: str
    kind: str  # transition | dispatch | parallel | human | sub_blueprint | declared
    label: str = ""
    condition: str | None = None


class HandlerRegistration:
    """What ``handler_for`` returns: a decorator, with ``.when(expr)`` for a conditional handler."""

    __slots__ = ("_blueprint", "_condition", "_is_end", "_is_start", "_state")

    def __init__(
        self, blueprint: StateMachineBlueprint, state: str, is_start: bool, is_end: bool, condition: str | None = None
    ) -> None:
        self._blueprint, self._state = blueprint, state
        self._is_start, self._is_end, self._condition = is_start, is_end, condition

    def when(self, expression: str) -> HandlerRegistration:
        """Run the handler only when ``expression`` holds (e.g. ``"context.initial_data.type == 'a'"``)."""
        return HandlerRegistration(self._blueprint, self._state, self._is_start, self._is_end, expression)

    def __call__(self, function: Handler) -> Handler:
        self._blueprint._add(
            self._state, function, self._condition, is_start=self._is_start, is_end=self._is_end, is_aggregator=False
        )
        return function


class StateMachineBlueprint:
    """A named state machine whose states are handled by decorated functions.

    Args:
        name: Unique name of the blueprint; jobs refer to it.
        api_version: Optional version prefix of its endpoint (``/api/{api_version}/...``).
        api_endpoint: Path that creates jobs, e.g. ``"/jobs/my_flow"``; defaults to ``/jobs/{name}``.
        data_stores: Objects handlers reach as ``context.data_stores.<name>``.
        input_model: Optional pydantic model that validates ``initial_data`` on job creation.
        description: One line shown in the studio.
        input_example: An example ``initial_data``, shown in the studio's start form (without one, the
            form offers the keys the handlers read from ``initial_data``).
    """

    def __init__(
        self,
        name: str,
        api_version: str | None = None,
        api_endpoint: str | None = None,
        data_stores: dict[str, Any] | None = None,
        input_model: type | None = None,
        description: str = "",
        input_example: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("a blueprint needs a non-empty name")
        self.name = name
        self.api_version = api_version
        self.api_endpoint = api_endpoint or f"/jobs/{name}"
        self.data_stores: dict[str, Any] = dict(data_stores or {})
        self.input_model = input_model
        self.description = description
        self.input_example = dict(input_example) if input_example is not None else None
        self.states: dict[str, StateInfo] = {}
        self.declared_edges: list[Edge] = []
        self._problems: list[Problem] = []
        self._version: str | None = None
        self._code: dict[str, str] | None = None
        self._edges: list[Edge] | None = None

    def __repr__(self) -> str:
        return f"StateMachineBlueprint({self.name!r}, states={list(self.states)})"

    # -- authoring -------------------------------------------------------------------------------
    def handler_for(self, state: str, is_start: bool = False, is_end: bool = False) -> HandlerRegistration:
        """Register the handler of ``state``; chain ``.when(expr)`` for a conditional one."""
        return HandlerRegistration(self, state, is_start, is_end)

    def aggregator_for(self, state: str) -> Callable[[Handler], Handler]:
        """Register the fan-in handler of ``state``: it runs once, after every branch has reported."""

        def decorate(function: Handler) -> Handler:
            self._add(state, function, None, is_start=False, is_end=False, is_aggregator=True)
            return function

        return decorate

    def transition(self, source: str, target: str, label: str = "") -> None:
        """Declare an edge the source code does not show (e.g. a computed target)."""
        self.declared_edges.append(Edge(source, target, "declared", label))
        self._version = self._edges = None

    def _add(
        self, state: str, function: Handler, condition: str | None, *, is_start: bool, is_end: bool, is_aggregator: bool
    ) -> None:
        if not isinstance(state, str) or not state:
            raise ValueError(f"blueprint '{self.name}': a state name must be a non-empty string")
        info = self.states.setdefault(state, StateInfo(state))
        info.is_start |= is_start
        info.is_end |= is_end
        info.is_aggregator |= is_aggregator
        spec = HandlerSpec(state, function, condition_text=condition, is_aggregator=is_aggregator)
        if condition is not None:
            try:
                spec.condition = compile_condition(condition)
            except ConditionError as exc:
                spec.condition_error = exc
            self._replace_or_append(info, spec)
        else:
            if info.default is not None and info.default.name != spec.name:
                self._problems.append(
                    Problem(
                        f"two default handlers ({info.default.name} and {spec.name}; the second replaced the first): "
                        "give one a .when() condition, or, if a handler was renamed in a notebook, create the "
                        "blueprint again (re-run its cells from the one that makes it)",
                        state,
                    )
                )
            info.default = spec
        self._version = self._code = self._edges = None

    def _replace_or_append(self, info: StateInfo, spec: HandlerSpec) -> None:
        for index, existing in enumerate(info.conditional):
            if existing.condition_text == spec.condition_text:
                if existing.name != spec.name:
                    self._problems.append(
                        Problem(
                            f"two handlers ({existing.name} and {spec.name}) share the condition "
                            f"{spec.condition_text!r}",
                            info.name,
                        )
                    )
                info.conditional[index] = spec  # re-defining a handler (e.g. a notebook cell run again)
                return
        info.conditional.append(spec)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def start_state(self) -> str | None:
        starts = [s.name for s in self.states.values() if s.is_start]
        return starts[0] if len(starts) == 1 else None

    @property
    def end_states(self) -> list[str]:
        return [s.name for s in self.states.values() if s.is_end]

    def find_handler(self, state: str, context: JobContext) -> HandlerSpec:
        """The first conditional handler whose condition holds, else the default one.

        Raises:
            ConditionFailed: A condition raised on this context (a :class:`HandlerError`: the engine
                quarantines the job with its message rather than trying the next handler).
            HandlerError: No handler applies.
        """
        info = self.states.get(state)
        if info is None:
            raise HandlerError(self.name, state, "no handler is registered for this state")
        for spec in info.conditional:
            try:
                if spec.matches(context):
                    return spec
            except ConditionEvaluationError as exc:
                failed = ConditionFailed(self.name, state, spec.name, exc.expression, exc.reason)
                logger.warning("%s", failed, extra={"blueprint": self.name, "state": state})
                raise failed from exc
        if info.default is None:
            raise HandlerError(self.name, state, "no .when() condition held and the state has no default handler")
        return info.default

    def input_keys(self) -> dict[str, Any]:
        """The keys of ``initial_data`` its handlers and conditions read, each with the value its code
        suggests (a ``.get()`` default, the literal a condition compares it with), else None."""
        found: dict[str, Any] = {}
        for info in self.states.values():
            for spec in info.handlers():
                for key, value in [*initial_data_keys(spec.function), *condition_keys(spec.condition_text)]:
                    if found.get(key) is None:
                        found[key] = value
        return found

    def edges(self) -> list[Edge]:
        """Every known edge: found in handler sources and declared with :meth:`transition` (read once
        per version of the blueprint)."""
        if self._edges is None:
            found: list[Edge] = []
            for info in self.states.values():
                for spec in info.handlers():
                    for edge in edges_in_source(spec.function):
                        found.append(_edge(info.name, edge, spec.condition_text))
            self._edges = list(dict.fromkeys([*found, *self.declared_edges]))
        return list(self._edges)

    @property
    def version(self) -> str:
        """A short hash of the graph and of the handlers' source: changes when states, flags, edges,
        conditions or the code of a handler change. Every job records the version it was created on."""
        if self._version is None:
            shape = {
                "states": sorted(
                    (s.name, s.is_start, s.is_end, s.is_aggregator, [h.condition_text for h in s.handlers()])
                    for s in self.states.values()
                ),
                "edges": sorted((e.source, e.target, e.kind, e.label, e.condition or "") for e in self.edges()),
                "code": sorted(self.code_versions().items()),
            }
            digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
            self._version = digest[:12]
        return self._version

    def code_versions(self) -> dict[str, str]:
        """A short hash per state of its handlers' source (with their conditions), to tell which
        states' code differs between two versions."""
        if self._code is None:
            self._code = {
                info.name: _digest([f"{h.condition_text or ''}\0{_source_of(h.function)}" for h in info.handlers()])
                for info in self.states.values()
            }
        return dict(self._code)

    # -- validation ------------------------------------------------------------------------------
    def validate(self) -> list[Problem]:
        """Every problem found: errors (registration refuses them) and warnings."""
        problems = list(self._problems)
        problems += self._start_and_end_problems()
        for info in self.states.values():
            for spec in info.handlers():
                if spec.condition_error is not None:
                    problems.append(Problem(str(spec.condition_error), info.name))
                if spec.signature_problem:
                    problems.append(Problem(f"handler {spec.name}: {spec.signature_problem}", info.name))
            if info.is_aggregator and info.is_start:
                problems.append(Problem("an aggregation state cannot be the start state", info.name))
            if info.conditional and info.default is None:
                problems.append(
                    Problem(
                        "has only .when() handlers and no default: a job none of whose conditions hold is quarantined",
                        info.name,
                        "warning",
                    )
                )
        edges = self.edges()
        for edge in edges:
            if edge.target not in self.states:
                problems.append(Problem(f"transitions to unknown state '{edge.target}'", edge.source))
        problems += self._reachability_problems(edges)
        return problems

    def check(self) -> list[Problem]:
        """Raise :class:`BlueprintInvalid` if there are errors; return the warnings."""
        problems = self.validate()
        errors = [str(p) for p in problems if p.severity == "error"]
        if errors:
            raise BlueprintInvalid(self.name, errors)
        return [p for p in problems if p.severity != "error"]

    def _start_and_end_problems(self) -> list[Problem]:
        if not self.states:
            return [Problem("it has no handlers")]
        problems = []
        starts = [s.name for s in self.states.values() if s.is_start]
        if not starts:
            problems.append(Problem("no start state: mark one handler with is_start=True"))
        elif len(starts) > 1:
            problems.append(Problem(f"more than one start state: {', '.join(starts)}"))
        if not self.end_states:
            problems.append(Problem("no end state: mark at least one handler with is_end=True"))
        return problems

    def _reachability_problems(self, edges: list[Edge]) -> list[Problem]:
        start = self.start_state
        if start is None:
            return []
        reached, frontier = {start}, [start]
        outgoing: dict[str, list[str]] = {}
        for edge in edges:
            outgoing.setdefault(edge.source, []).append(edge.target)
        while frontier:
            for target in outgoing.get(frontier.pop(), []):
                if target not in reached:
                    reached.add(target)
                    frontier.append(target)
        # A computed target (transition_to(variable)) is invisible to the source scan, so an
        # unreachable state is a warning, not an error; declare such edges with .transition().
        return [
            Problem("is not reachable from the start state by any known transition", name, "warning")
            for name in self.states
            if name not in reached
        ]

    # -- graph -----------------------------------------------------------------------------------
    def render_graph(self, output_filename: str | None = None, output_format: str = "png") -> str | None:
        """The graph as DOT text, or, given ``output_filename``, rendered to that file (needs graphviz)."""
        from .graph import render_blueprint

        return render_blueprint(self, output_filename, output_format)

    def _repr_svg_(self) -> str:
        from .graph import blueprint_svg

        return blueprint_svg(self)


def _source_of(function: Handler) -> str:
    """A handler's code: its source without decorators, comments or layout (so neither the name of the
    blueprint that registers it nor where it sits in its file changes it); its bytecode and constants
    when the source cannot be read."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        code = getattr(function, "__code__", None)
        return repr((code.co_code, code.co_consts)) if code is not None else repr(function)
    node = tree.body[0] if tree.body else tree
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        node.decorator_list = []
    return ast.unparse(node)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def _edge(source: str, found: FoundEdge, condition: str | None) -> Edge:
    return Edge(source, found.target, found.kind, found.label, condition)


def _build_invoker(function: Handler) -> tuple[Callable[[JobContext], Any], str | None]:
    """Turn a handler of any supported signature into ``invoke(context)``."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return (lambda context: function(context)), None
    names = [p.name for p in parameters]
    if names and all(name in INJECTABLE for name in names):
        return _by_name(function, parameters), None
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in parameters if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    problem = (
        f"cannot call it with parameters ({', '.join(names)}): take `context`, "
        f"`(context, actions)`, or parameters named from {', '.join(INJECTABLE)}"
    )
    if not required and not positional:
        return (lambda context: function()), None
    if len(required) <= 1 and positional:
        return (lambda context: function(context)), _misnamed(positional[:1], ("context",), problem)
    if len(required) == 2 and len(positional) >= 2:
        return (lambda context: function(context, context.actions)), _misnamed(
            positional[:2], ("context", "actions"), problem
        )
    return (lambda context: function(context)), problem


def _by_name(function: Handler, parameters: list[inspect.Parameter]) -> Callable[[JobContext], Any]:
    """Fill every parameter from the context by its name (positional-only ones by position).

    Every step calls it: parameters that all take a position are passed by position, in their order
    (the same call), and ``(context)`` alone is the handler itself.
    """
    if all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
        gets = [_INJECT[p.name] for p in parameters]
        if len(gets) == 1:
            get = gets[0]
            return function if get is _context else lambda context: function(get(context))  # type: ignore[return-value]
        return lambda context: function(*[get(context) for get in gets])
    leading = [_INJECT[p.name] for p in parameters if p.kind == p.POSITIONAL_ONLY]
    named = [(p.name, _INJECT[p.name]) for p in parameters if p.kind != p.POSITIONAL_ONLY]
    return lambda context: function(*(get(context) for get in leading), **{n: get(context) for n, get in named})


def _misnamed(parameters: list[inspect.Parameter], receives: tuple[str, ...], problem: str) -> str | None:
    """A problem when a parameter is named after one injectable value but would receive another."""
    for parameter, value in zip(parameters, receives, strict=False):
        if parameter.name in INJECTABLE and parameter.name != value:
            return f"{problem} (`{parameter.name}` would receive the {value})"
    return None


def _context(context: JobContext) -> JobContext:
    return context


_INJECT: dict[str, Callable[[JobContext], Any]] = {
    "context": _context,
    "actions": lambda c: c.actions,
    "job_id": lambda c: c.job_id,
    "initial_data": lambda c: c.initial_data,
    "state_history": lambda c: c.state_history,
    "data_stores": lambda c: c.data_stores,
    "client": lambda c: c.client,
    "aggregation_results": lambda c: c.aggregation_results,
}
