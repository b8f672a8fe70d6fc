"""Property tests: the condition parser never executes code, and the job state machine never stalls.

The condition tests add to tests/test_conditions.py (any text compiles or raises ConditionError):
whatever the text, nothing is ever called, imported or evaluated, and every expression with a call,
a lambda, a comprehension or a private attribute is refused.

The state machine drives an in-process engine (tests/engine_helpers.py) with random sequences of
job creations, worker results (success, transient, permanent, invalid input, unknown status,
cancelled) and operator actions (cancel, retry, release, fail), checking after every step that no
job stalls, that a terminal job does not move without an operator action, that ``retry_count``
never decreases (between operator actions), and that a finished job is in an end state.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
from types import SimpleNamespace
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule
from support.blueprints import one_task_blueprint
from support.engine import FakeWorker, assert_no_silent_stall, failure, started_engine, success

from avtomatika.conditions import Condition, compile_condition
from avtomatika.errors import ConditionError, ConditionEvaluationError, InvalidOperation, ResultRejected
from avtomatika.models import TERMINAL_STATUSES, JobStatus

# -- the condition parser ------------------------------------------------------------------------------
PATHS = ["context.initial_data.a", "context.state_history.b", "context.client.name", "context.job_id"]
LITERALS = ["1", "'x'", "None", "True", "[1, 2]", "2.5"]
DANGEROUS = [
    "__import__('os').system('touch /tmp/avtomatika-pwned')",
    "open('/etc/passwd').read()",
    "eval('1')",
    "exec('x = 1')",
    "(lambda: 1)()",
    "context.initial_data.__class__",
    "context.__class__.__mro__",
    "context.initial_data.a.__globals__",
    "[x for x in context.initial_data]",
    "context.initial_data.get('a')",
    "getattr(context, 'initial_data')",
    "context.actions.transition_to('x')",
    "(x := 1)",
    "f'{context}'",
    "context.initial_data._private",
    "breakpoint()",
]


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    """Python expressions mixing the allowed grammar with dangerous pieces."""
    if depth == 0 or draw(st.booleans()):
        return draw(st.sampled_from(PATHS + LITERALS + DANGEROUS))
    left, right = draw(expressions(depth - 1)), draw(expressions(depth - 1))
    shape = draw(st.sampled_from(["{} == {}", "{} and {}", "not {}", "{} in {}", "({}) or ({})", "{} < {}"]))
    return shape.format(left, right) if shape.count("{}") == 2 else shape.format(left)


def _is_dangerous(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call | ast.Lambda | ast.ListComp | ast.NamedExpr | ast.JoinedStr):
            return True
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            return True
    return False


class Tripwire:
    """A context value that fails the test if anything but reading a field or comparing is done with it."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AssertionError(f"the condition reached {name}")
        return 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the condition called a value")


def _context() -> Any:
    return SimpleNamespace(
        initial_data={"a": 1, "b": Tripwire()},
        state_history={"b": [1, 2]},
        job_id="j",
        client=SimpleNamespace(name="acme"),
        aggregation_results={},
        actions=Tripwire(),
    )


# ``compile`` is left alone: ``ast.parse`` is how the parser reads a condition (without running it).
def _forbidden(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the condition parser executed code")


def _evaluated(condition: Condition) -> bool:
    """The condition's value on the test context; False when it reported a comparison that failed on the data."""
    try:
        return condition.evaluate(_context())
    except ConditionEvaluationError:  # e.g. "1 in 1": the job would be quarantined with this message
        return False


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(expressions())
def test_no_condition_executes_code(text: str) -> None:
    with (
        mock.patch.object(builtins, "eval", _forbidden),
        mock.patch.object(builtins, "exec", _forbidden),
        mock.patch.object(builtins, "__import__", _forbidden),
        mock.patch.object(builtins, "open", _forbidden),
        mock.patch.object(builtins, "breakpoint", _forbidden),
    ):
        try:
            condition = compile_condition(text)
        except ConditionError:
            return
        result = _evaluated(condition)
    assert type(result) is bool
    assert not _is_dangerous(ast.parse(text, mode="eval")), f"{text!r} was accepted"


@settings(max_examples=300)
@given(st.sampled_from(DANGEROUS), st.sampled_from(["{}", "{} == 1", "not {}", "1 in {}", "{} and True"]))
def test_calls_lambdas_and_private_attributes_are_refused(piece: str, shape: str) -> None:
    text = shape.format(piece)
    try:
        compile_condition(text)
    except ConditionError:
        return
    raise AssertionError(f"{text!r} was accepted")


@settings(max_examples=200)
@given(st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")) | st.text(alphabet=st.characters()))
def test_any_unicode_or_control_characters_compile_or_raise_condition_error(text: str) -> None:
    try:
        condition = compile_condition(text)
    except ConditionError:
        return
    assert type(_evaluated(condition)) is bool


# -- the job state machine -------------------------------------------------------------------------
flow = one_task_blueprint("prop", endpoint=True)

RESULTS: dict[str, dict[str, Any]] = {
    "success": success({"ok": True}),
    "transient": failure("TRANSIENT_ERROR"),
    "no code": failure(None),
    "permanent": failure("PERMANENT_ERROR"),
    "invalid": failure("INVALID_INPUT_ERROR"),
    "unknown status": {"status": "weird", "data": {}},
    "cancelled": {"status": "cancelled"},
}
OPERATIONS = ("cancel", "retry", "release", "fail")


class JobMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.context = started_engine(flow, JOB_MAX_RETRIES=2, RETRY_BACKOFF_MAX_SECONDS=0.02)
        self.engine = self.run(self.context.__aenter__())
        self.worker = FakeWorker(self.engine, "w1", ["echo"])
        self.run(self.worker.register())
        self.terminal: dict[str, tuple[str, str, int]] = {}  # job id -> (status, state, retry_count) seen
        self.retries: dict[str, int] = {}

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.run(self.context.__aexit__(None, None, None))
        self.loop.close()

    @initialize(target=jobs)
    def first_job(self) -> str:
        return self.run(self.engine.create_job("prop", {"n": 0})).id

    @rule(target=jobs)
    def create(self) -> str:
        return self.run(self.engine.create_job("prop", {"n": 1})).id

    @rule(kind=st.sampled_from(sorted(RESULTS)), late=st.booleans())
    def worker_answers(self, kind: str, late: bool) -> None:
        task = self.run(self.worker.poll(0.05))
        if task is None:
            return
        if late:  # the job may have moved on meanwhile (an operator acted): the result must not revive it
            self.run(asyncio.sleep(0.01))
        with contextlib.suppress(ResultRejected):
            self.run(self.worker.answer(task, RESULTS[kind]))

    @rule(job=jobs, operation=st.sampled_from(OPERATIONS))
    def operator(self, job: str, operation: str) -> None:
        try:
            self.run(getattr(self.engine, f"{operation}_job")(job, actor="property-test"))
        except InvalidOperation:
            return
        finally:
            self.terminal.pop(job, None)  # an operator may move a terminal job
            self.retries.pop(job, None)

    @rule()
    def settle(self) -> None:
        self.run(asyncio.sleep(0.03))

    @invariant()
    def no_job_stalls(self) -> None:
        self.run(assert_no_silent_stall(self.engine))

    @invariant()
    def terminal_jobs_stay_put_and_retries_only_grow(self) -> None:
        for job in self.run(self.engine.list_jobs(limit=10_000)):
            seen = self.retries.get(job.id, 0)
            assert job.retry_count >= seen, f"{job.id}: retry_count went from {seen} to {job.retry_count}"
            self.retries[job.id] = job.retry_count
            now = (job.status, job.state, job.retry_count)
            if job.id in self.terminal:
                assert now == self.terminal[job.id], (
                    f"terminal job {job.id} moved from {self.terminal[job.id]} to {now}"
                )
            elif job.status in TERMINAL_STATUSES:
                self.terminal[job.id] = now
            if job.status == JobStatus.FINISHED:
                assert job.state in flow.end_states


JobMachine.TestCase.settings = settings(
    max_examples=15, stateful_step_count=20, deadline=None, suppress_health_check=list(HealthCheck)
)
test_job_state_machine = JobMachine.TestCase
