"""Tests for the safe ``.when()`` condition parser/evaluator."""

from __future__ import annotations

import ast
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avtomatika.conditions import MAX_DEPTH, MAX_LENGTH, Condition, compile_condition
from avtomatika.errors import ConditionError, ConditionEvaluationError

_UNSET: Any = object()


def make_context(initial_data: Any = _UNSET, **extra: Any) -> SimpleNamespace:
    fields: dict[str, Any] = {
        "initial_data": {} if initial_data is _UNSET else initial_data,
        "state_history": {},
        "job_id": "job-1",
        "client": SimpleNamespace(name="acme", plan="pro", tags=["a", "b"]),
        "aggregation_results": {},
    }
    fields.update(extra)
    return SimpleNamespace(**fields)


def check(expression: str, context: object) -> bool:
    result = compile_condition(expression).evaluate(context)
    assert type(result) is bool
    return result


# --- the seed form -------------------------------------------------------------------------------


SEED = "context.initial_data.type == 'urgent'"


def test_seed_true() -> None:
    assert check(SEED, make_context({"type": "urgent"})) is True


def test_seed_false() -> None:
    assert check(SEED, make_context({"type": "normal"})) is False


@pytest.mark.parametrize(
    "context",
    [make_context({}), make_context({"other": 1}), make_context(initial_data=[]), SimpleNamespace(), None],
)
def test_seed_missing(context: object) -> None:
    assert check(SEED, context) is False


def test_seed_repr_paths_and_slots() -> None:
    condition = compile_condition(SEED)
    assert isinstance(condition, Condition)
    assert condition.expression == SEED
    assert condition.paths == ("initial_data.type",)
    assert repr(condition) == f"Condition({SEED!r})"
    assert not hasattr(condition, "__dict__")


# --- operators -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("context.initial_data.n == 5", True),
        ("context.initial_data.n == 6", False),
        ("context.initial_data.n != 6", True),
        ("context.initial_data.n != 5", False),
        ("context.initial_data.n < 6", True),
        ("context.initial_data.n < 5", False),
        ("context.initial_data.n <= 5", True),
        ("context.initial_data.n <= 4", False),
        ("context.initial_data.n > 4", True),
        ("context.initial_data.n > 5", False),
        ("context.initial_data.n >= 5", True),
        ("context.initial_data.n >= 5.5", False),
        ("context.initial_data.n == -5", False),
        ("context.initial_data.neg == -2.5", True),
        ("context.initial_data.neg < +0", True),
        ("0 < context.initial_data.n <= 5", True),
        ("0 < context.initial_data.n < 5", False),
        ("1 < 2 < context.initial_data.n > 4", True),
        ("context.initial_data.n in [1, 5, 9]", True),
        ("context.initial_data.n in (1, 2)", False),
        ("context.initial_data.n in {5}", True),
        ("context.initial_data.n not in [1, 2]", True),
        ("context.initial_data.n not in [5]", False),
        ("context.initial_data.flag is True", True),
        ("context.initial_data.flag is not True", False),
        ("context.initial_data.off is False", True),
        ("context.initial_data.missing is None", True),
        ("context.initial_data.n is not None", True),
        ("None is context.initial_data.missing", True),
        ("context.initial_data.items == [1, 2, 3]", True),
        ("context.initial_data.items == (1, 2, 3)", False),
        ("context.initial_data.items != []", True),
    ],
)
def test_operators(expression: str, expected: bool) -> None:
    data = {"n": 5, "neg": -2.5, "flag": True, "off": False, "items": [1, 2, 3]}
    assert check(expression, make_context(data)) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("context.initial_data.a == 1 and context.initial_data.b == 2", True),
        ("context.initial_data.a == 1 and context.initial_data.b == 3", False),
        ("context.initial_data.a == 9 or context.initial_data.b == 2", True),
        ("context.initial_data.a == 9 or context.initial_data.b == 9", False),
        ("not context.initial_data.a == 9", True),
        ("not context.initial_data.a", False),
        ("not not context.initial_data.a", True),
        ("context.initial_data.a == 9 or context.initial_data.a == 1 and context.initial_data.b == 2", True),
        (
            "(context.initial_data.a == 9 or context.initial_data.a == 1) and context.initial_data.b == 9",
            False,
        ),
        ("context.initial_data.a and context.initial_data.b and context.initial_data.c", False),
        ("context.initial_data.c or context.initial_data.b", True),
        ("not (context.initial_data.c or context.initial_data.missing)", True),
    ],
)
def test_boolean_logic(expression: str, expected: bool) -> None:
    assert check(expression, make_context({"a": 1, "b": 2, "c": 0})) is expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'ur' in context.initial_data.type", True),
        ("'xx' in context.initial_data.type", False),
        ("'xx' not in context.initial_data.type", True),
        ("context.initial_data.type in ['urgent', 'high']", True),
        ("context.initial_data.type in ('low', 'high')", False),
        ("context.initial_data.type not in ['low', 'high']", True),
        ("context.initial_data.type in 'very urgent indeed'", True),
        ("'b' in context.client.tags", True),
        ("'z' in context.client.tags", False),
        ("'type' in context.initial_data", True),
        ("'nope' not in context.initial_data", True),
    ],
)
def test_membership(expression: str, expected: bool) -> None:
    assert check(expression, make_context({"type": "urgent"})) is expected


# --- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("context.initial_data.order.customer.tier == 'gold'", True),
        ("context.initial_data['order']['customer'].tier == 'gold'", True),
        ("context.initial_data.items[0] == 'x'", True),
        ("context.initial_data.items[-1] == 'z'", True),
        ("context.initial_data.items[3] is None", True),
        ("context.initial_data.items[-4] is None", True),
        ("context.initial_data.items.first is None", True),
        ("context.initial_data.pairs[1][0] == 3", True),
        ("context.initial_data.order.customer.tier.deeper is None", True),
        ("context.initial_data.order['customer']['missing'][0] is None", True),
        ("context.initial_data[0] is None", True),
        ("context.state_history['a-b'] == 'done'", True),
        ("context.state_history['_private'] == 1", True),
        ("context.job_id == 'job-1'", True),
        ("context['job_id'] == 'job-1'", True),
        ("context.client.name == 'acme'", True),
        ("context.client.tags[1] == 'b'", True),
        ("context.client['plan'] == 'pro'", True),
        ("context.client['_hidden'] is None", True),
        ("context.client[0] is None", True),
        ("context.aggregation_results.w1.score >= 0.5", True),
    ],
)
def test_paths(expression: str, expected: bool) -> None:
    data = {
        "order": {"customer": {"tier": "gold"}},
        "items": ["x", "y", "z"],
        "pairs": [[1, 2], (3, 4)],
    }
    context = make_context(
        data,
        state_history={"a-b": "done", "_private": 1},
        aggregation_results={"w1": {"score": 0.75}},
    )
    context.client._hidden = "secret"
    assert check(expression, context) is expected


def test_paths_are_collected_in_order_without_duplicates() -> None:
    condition = compile_condition(
        "context.initial_data.a == 1 or context.state_history['a-b'] or context.initial_data.a > 3 "
        "or context.initial_data.items[0] or context.client['_x']"
    )
    assert condition.paths == (
        "initial_data.a",
        "state_history['a-b']",
        "initial_data.items[0]",
        "client['_x']",
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("context.initial_data.flag", True),
        ("context.initial_data.off", False),
        ("context.initial_data.empty", False),
        ("context.initial_data.items", True),
        ("context.initial_data.missing", False),
        ("context.initial_data.none is None", True),
        ("context.initial_data.none == None", True),
        ("context.initial_data.none is not None", False),
        ("context.initial_data.flag == True", True),
        ("context.initial_data.one == True", True),
        ("context.initial_data.one is True", False),
        ("True", True),
        ("None", False),
        ("[1]", True),
        ("'text' == 'text'", True),
    ],
)
def test_booleans_none_and_truthiness(expression: str, expected: bool) -> None:
    data = {"flag": True, "off": False, "empty": "", "items": [0], "none": None, "one": 1}
    assert check(expression, make_context(data)) is expected


# --- missing data is False; a failing comparison is reported --------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "context.initial_data.missing > 3",
        "context.initial_data.missing < 3",
        "3 <= context.initial_data.missing",
        "context.initial_data.none >= 1",
        "0 < context.initial_data.missing < 10",
        "'a' in context.initial_data.missing",
        "'a' not in context.initial_data.missing",
        "context.initial_data.missing in ('a', 'b')",
        "context.initial_data.missing == 3",
    ],
)
def test_a_comparison_failing_on_a_missing_value_is_false(expression: str) -> None:
    assert check(expression, make_context({"none": None})) is False


def test_a_missing_value_compares_as_none_where_python_can() -> None:
    assert check("context.initial_data.missing not in ('a', 'b')", make_context({})) is True
    assert check("context.initial_data.missing != 3", make_context({})) is True


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("context.initial_data.amount > 1000", "'>' not supported between instances of 'str' and 'int'"),
        ("context.initial_data.text < 1", "'<' not supported"),
        ("context.initial_data.items > 1", "'>' not supported between instances of 'list' and 'int'"),
        ("0 < context.initial_data.text < 10", "'<' not supported"),
        ("1 in context.initial_data.text", "'in <string>' requires string as left operand"),
        ("1 in context.initial_data.number", "argument of type 'int' is not"),
        ("1 not in context.initial_data.number", "argument of type 'int' is not"),
        ("context.initial_data.items in {1, 2}", "unhashable type: 'list'"),
    ],
)
def test_type_errors_raise_naming_the_condition_and_the_values(expression: str, fragment: str) -> None:
    data = {"amount": "2000", "text": "a", "number": 7, "items": [1]}
    with pytest.raises(ConditionEvaluationError) as info:
        compile_condition(expression).evaluate(make_context(data))
    error = info.value
    assert error.expression == expression
    assert fragment in error.reason
    assert "TypeError" in error.reason
    assert expression in str(error)


def test_the_values_compared_are_shown() -> None:
    with pytest.raises(ConditionEvaluationError, match=r"evaluating '2000' > 1000"):
        compile_condition("context.initial_data.amount > 1000").evaluate(make_context({"amount": "2000"}))


class Hostile:
    """A value whose comparisons, truthiness and attributes all blow up."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq")

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("lt")

    def __bool__(self) -> bool:
        raise RuntimeError("bool")

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("getattr")

    def __repr__(self) -> str:
        raise RuntimeError("repr")


class RaisingContext:
    @property
    def initial_data(self) -> Any:
        raise RuntimeError("property")


@pytest.mark.parametrize(
    ("expression", "context", "reason"),
    [
        ("context.initial_data.h == 1", make_context({"h": Hostile()}), "RuntimeError: eq (evaluating <Hostile> == 1)"),
        ("context.initial_data.h < 1", make_context({"h": Hostile()}), "RuntimeError: lt"),
        ("context.initial_data.h", make_context({"h": Hostile()}), "RuntimeError: bool (testing <Hostile> for truth)"),
        ("context.initial_data.h in {1, 2}", make_context({"h": Hostile()}), "unhashable type: 'Hostile'"),
        ("context.initial_data.h in [1, 2]", make_context({"h": Hostile()}), "RuntimeError: eq"),
        ("context.initial_data == 1", make_context(Hostile()), "RuntimeError: eq"),
    ],
)
def test_hostile_values_raise_a_condition_evaluation_error(expression: str, context: object, reason: str) -> None:
    with pytest.raises(ConditionEvaluationError) as info:
        compile_condition(expression).evaluate(context)
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("expression", "context", "expected"),
    [
        ("context.initial_data.h.anything == 1", make_context({"h": Hostile()}), False),
        ("context.initial_data.a == 1", RaisingContext(), False),
        ("context.initial_data.a is None", RaisingContext(), True),
    ],
)
def test_a_path_that_cannot_be_read_is_none(expression: str, context: object, expected: bool) -> None:
    assert check(expression, context) is expected


# --- rejected expressions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "fragment", "column"),
    [
        ("__import__('os').system('x')", "function calls are not allowed", 24),
        ("context.initial_data.__class__", "names starting with '_' are not allowed", 22),
        ("context._secret == 1", "names starting with '_' are not allowed", 9),
        ("_x == 1", "names starting with '_' are not allowed", 1),
        ("context.actions.transition_to('x')", "function calls are not allowed", 30),
        (
            "context.actions == 1",
            "'context.actions' is not readable in a condition; use one of: initial_data",
            9,
        ),
        ("context['actions'] == 1", "'context.actions' is not readable", 1),
        ("context == 1", "'context' alone is not readable", 1),
        ("foo == 1", "unknown name 'foo': conditions start with 'context.'", 1),
        ("context.job_id == x", "unknown name 'x'", 19),
        ("1 + 2 == 3", "operator '+' is not allowed", 1),
        ("context.initial_data.n * 2 > 3", "operator '*' is not allowed", 1),
        ("context.initial_data.n == 2 ** 8", "operator '**' is not allowed", 27),
        ("context.initial_data.n | 1", "operator '|' is not allowed", 1),
        ("~context.initial_data.n", "operator '~' is not allowed", 1),
        ("-context.initial_data.n > 1", "unary '-' and '+' only apply to number literals", 1),
        ("[x for x in y]", "comprehensions are not allowed", 1),
        ("context.job_id in {x for x in 'ab'}", "comprehensions are not allowed", 19),
        ("lambda: 1", "lambda functions are not allowed", 1),
        ("context.initial_data.a == (yield)", "'yield' is not allowed", 28),
        ("context.job_id == f'{context}'", "f-strings are not allowed", 19),
        ("context.job_id in [*context.initial_data.items]", "starred expressions are not allowed", 20),
        ("(x := 1)", "assignment expressions (:=) are not allowed", 2),
        ("context.job_id if True else 1", "conditional expressions", 1),
        ("context.initial_data == {'a': 1}", "dict displays are not allowed", 25),
        ("context.initial_data.items[1:2] == []", "slices are not allowed", 28),
        ("context.initial_data.items[context.job_id]", "subscripts must be a string or integer literal", 28),
        ("context.initial_data.items[1.5]", "subscripts must be a string or integer literal", 28),
        ("context.initial_data.items[True]", "subscripts must be a string or integer literal", 28),
        ("context.job_id == b'x'", "bytes literals are not allowed", 19),
        ("context.job_id == 1j", "complex literals are not allowed", 19),
        ("context.job_id == ...", "ellipsis literals are not allowed", 19),
        ("context.job_id in [context.initial_data.a]", "elements must be literals, not paths", 20),
        ("context.job_id in [[1]]", "elements must be str/number/bool/None literals", 20),
        ("context.job_id is 'job-1'", "'is' / 'is not' only compare with None, True or False", 19),
        ("context.job_id is not context.job_id", "'is' / 'is not' only compare with None", 23),
        ("(context.job_id == 1) == True", "comparison operands must be a 'context.' path or a literal", 2),
        ("context.job_id ==", "syntax error: invalid syntax (the condition ends too early)", 18),
        ("context.initial_data.size >  ", "the condition ends too early", 28),
        ("context.job_id = 'x'", "syntax error", 16),
        ("context.job_id == 'x' ; 1", "syntax error", 23),
        ("context.job_id == '\\d'", "syntax error: invalid escape sequence", 19),
        ("await context.job_id", "'await' is not allowed", 1),
    ],
)
def test_rejected(expression: str, fragment: str, column: int) -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition(expression)
    error = info.value
    assert fragment in error.reason
    assert error.column == column
    assert error.expression == expression
    assert f"at column {column}" in str(error)


def test_columns_account_for_leading_whitespace_lines_and_non_ascii() -> None:
    with pytest.raises(ConditionError) as info:
        compile_condition("   foo == 1")
    assert info.value.column == 4
    with pytest.raises(ConditionError) as info:
        compile_condition("'äöü' == foo")
    assert info.value.column == 10
    with pytest.raises(ConditionError) as info:
        compile_condition("(context.job_id == 'x' and\n foo)")
    assert info.value.column == 29


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("", "condition is empty"),
        ("   \n\t ", "condition is empty"),
        ("context.job_id == '" + "x" * MAX_LENGTH + "'", f"the limit is {MAX_LENGTH}"),
        ("not " * (MAX_DEPTH + 1) + "context.job_id", "nested more than"),
        ("context.initial_data" + ".a" * MAX_DEPTH + " == 1", "nested more than"),
        ("(" * 300 + "1" + ")" * 300, "syntax error"),
        ("context.job_id == '\x00'", "null bytes"),
        ("'\ud800'", "cannot parse"),
    ],
)
def test_rejected_input_shapes(expression: str, fragment: str) -> None:
    with pytest.raises(ConditionError, match="Invalid condition") as info:
        compile_condition(expression)
    assert fragment in info.value.reason


def test_non_string_is_rejected() -> None:
    with pytest.raises(ConditionError, match="must be a string"):
        compile_condition(42)  # type: ignore[arg-type]


def test_maximum_length_and_depth_are_accepted() -> None:
    padded = "context.job_id == 'x'" + " " * (MAX_LENGTH - 21)
    assert len(padded) == MAX_LENGTH
    assert compile_condition(padded).evaluate(make_context()) is False
    deep = "not " * (MAX_DEPTH - 3) + "context.initial_data.flag"
    assert compile_condition(deep).evaluate(make_context({"flag": True})) is ((MAX_DEPTH - 3) % 2 == 0)


# --- no code runs --------------------------------------------------------------------------------


class Spy:
    """A client whose every attribute read and method call is recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def shutdown(self) -> str:
        self.calls.append("shutdown")
        return "done"

    @property
    def name(self) -> str:
        self.calls.append("name")
        return "spy"


@pytest.mark.parametrize(
    "expression",
    [
        "context.client.shutdown()",
        "context.client.shutdown() == 'done'",
        "context.client.name == 'spy' and context.client.shutdown()",
        "context.client.__class__.__subclasses__()",
        "context.client.shutdown.__call__",
        "[context.client.shutdown() for _ in 'a']",
    ],
)
def test_calls_are_rejected_before_anything_runs(expression: str) -> None:
    spy = Spy()
    with pytest.raises(ConditionError):
        compile_condition(expression)
    assert spy.calls == []


def test_evaluation_reads_data_but_never_calls_methods() -> None:
    spy = Spy()
    context = make_context(client=spy)
    assert compile_condition("context.client.name == 'spy'").evaluate(context) is True
    assert compile_condition("context.client.shutdown == 'done'").evaluate(context) is False
    assert compile_condition("context.client.shutdown").evaluate(context) is True  # a method, uncalled
    assert spy.calls == ["name"]


def test_evaluation_does_not_parse_again(monkeypatch: pytest.MonkeyPatch) -> None:
    condition = compile_condition(SEED)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed at evaluation time")

    monkeypatch.setattr(ast, "parse", boom)
    assert condition.evaluate(make_context({"type": "urgent"})) is True


# --- properties ----------------------------------------------------------------------------------


TOKENS = [
    "context", ".", "initial_data", "state_history", "job_id", "client", "actions", "a", "_b", "[", "]",
    "(", ")", "0", "-1", "'x'", "1.5", "None", "True", "==", "!=", "<", ">=", "in", "not", "is", "and",
    "or", "+", ",", ":", "lambda", "for", "if", "else", "*", "f'{a}'", "'\\d'", "\n", " ",
]  # fmt: skip


def evaluated(condition: Condition, context: object) -> bool:
    """The condition's value, False when it raised ConditionEvaluationError; anything else escapes."""
    try:
        return condition.evaluate(context)
    except ConditionEvaluationError as error:
        failed = error
    assert failed.expression == condition.expression
    return False


def check_compiles_or_fails_cleanly(text: str) -> None:
    """Anything other than a Condition or a ConditionError escapes and fails the test."""
    outcome: Condition | ConditionError
    try:
        outcome = compile_condition(text)
    except ConditionError as error:
        outcome = error
    if isinstance(outcome, ConditionError):
        assert outcome.column is None or 1 <= outcome.column <= len(text) + 1
    else:
        assert type(evaluated(outcome, make_context({"a": 1, "x": [1]}))) is bool


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_any_text_compiles_or_raises_condition_error(text: str) -> None:
    check_compiles_or_fails_cleanly(text)


@settings(max_examples=500)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join))
def test_token_soup_compiles_or_raises_condition_error(text: str) -> None:
    check_compiles_or_fails_cleanly(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)

VALID = [
    compile_condition(expression)
    for expression in [
        SEED,
        "context.initial_data",
        "context.initial_data.a",
        "not context.initial_data.a.b[0]",
        "context.initial_data.a > 3 or context.initial_data.a <= -1.5",
        "0 < context.initial_data.a < context.initial_data.b",
        "context.initial_data.a in context.initial_data.b",
        "context.initial_data.a not in context.initial_data",
        "'x' in context.initial_data.a and context.initial_data['a'][-1] == 'x'",
        "context.initial_data.a in [1, 'two', None, 3.0, True]",
        "context.initial_data.a in {1, 'two'}",
        "context.initial_data.a is None or context.initial_data.a is not False",
        "context.initial_data.a == context.initial_data.b",
        "context.initial_data.a.b.c.d == (1, 2)",
        "context.initial_data[0][1]['x'] >= 'abc'",
    ]
]


@given(st.dictionaries(st.sampled_from(["a", "b", "type", "x"]), JSON, max_size=4) | JSON)
def test_valid_conditions_always_return_bool(initial_data: Any) -> None:
    context = make_context(initial_data=initial_data)
    for condition in VALID:
        assert type(evaluated(condition, context)) is bool
