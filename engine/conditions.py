"""Safe conditions for blueprint ``.when("...")`` clauses.

An expression is parsed once with :func:`ast.parse` and compiled into nested closures; nothing is ever
passed to ``eval``/``exec``/``compile``. Only this whitelist is accepted, everything else is a
:class:`~avtomatika.errors.ConditionError` pointing at the offending column:

* ``and``, ``or``, ``not``; a bare path or literal is tested for truthiness;
* comparisons ``== != < <= > >= in not in`` (chains allowed) and ``is``/``is not`` against
  ``None``/``True``/``False``;
* paths ``context.<root>`` followed by public attribute names and ``[...]`` keys that are str/int
  literals, where ``<root>`` is one of :data:`ROOTS`;
* literals: str, int, float, bool, None, signed numbers, and list/tuple/set displays of those.

Reading a path never raises: a missing key or attribute resolves to ``None``, and a comparison that
fails because one side is ``None`` (``None > 3``, ``'a' in None``) is ``False``, so a condition on data
that is not there yet simply does not hold. Anything else that fails while a condition is
evaluated (``"2000" > 1000`` with a number that came as a string from JSON, ``1 in 7``, a value whose
``==`` raises) raises :class:`~avtomatika.errors.ConditionEvaluationError`: the blueprint turns it into a
:class:`~avtomatika.errors.ConditionFailed` and the engine quarantines the job with that message,
rather than silently taking another branch.
"""

from __future__ import annotations

import ast
import operator
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConditionError, ConditionEvaluationError

ROOTS = ("initial_data", "state_history", "job_id", "client", "aggregation_results")
MAX_LENGTH = 1000
MAX_DEPTH = 50

_Fn = Callable[[object], Any]
_Key = str | int
_SCALARS = (str, int, float, bool, type(None))
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_COMPARE_SYMBOLS: dict[type[ast.cmpop], str] = {
    ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}  # fmt: skip
_SYMBOLS = {  # operator symbols by AST class name, for error messages
    "Add": "+", "Sub": "-", "Mult": "*", "MatMult": "@", "Div": "/", "FloorDiv": "//", "Mod": "%",
    "Pow": "**", "LShift": "<<", "RShift": ">>", "BitOr": "|", "BitXor": "^", "BitAnd": "&",
    "Invert": "~", "Not": "not",
}  # fmt: skip
_FORBIDDEN = {
    "Call": "function calls are not allowed",
    "Lambda": "lambda functions are not allowed",
    "JoinedStr": "f-strings are not allowed",
    "Starred": "starred expressions are not allowed",
    "NamedExpr": "assignment expressions (:=) are not allowed",
    "Yield": "'yield' is not allowed",
    "YieldFrom": "'yield' is not allowed",
    "Await": "'await' is not allowed",
    "IfExp": "conditional expressions (x if c else y) are not allowed",
    "Dict": "dict displays are not allowed",
    "Slice": "slices are not allowed",
} | dict.fromkeys(("ListComp", "SetComp", "DictComp", "GeneratorExp"), "comprehensions are not allowed")
_NEWLINE = re.compile(r"\r\n|\r|\n")


class Condition:
    """A compiled ``.when()`` expression; call :meth:`evaluate` with a job context."""

    __slots__ = ("_fn", "expression", "paths")

    def __init__(self, expression: str, fn: Callable[[object], bool], paths: tuple[str, ...]) -> None:
        self.expression = expression
        self.paths = paths  # dotted paths read, without the ``context.`` prefix
        self._fn = fn

    def evaluate(self, context: object) -> bool:
        """Return whether the condition holds for ``context``.

        Raises:
            ConditionEvaluationError: A comparison or truth test failed on the data (not a missing value).
        """
        try:
            return self._fn(context)
        except _Failed as failed:
            raise ConditionEvaluationError(self.expression, failed.reason) from failed.__cause__

    def __repr__(self) -> str:
        return f"Condition({self.expression!r})"


def compile_condition(expression: str) -> Condition:
    """Parse and check ``expression`` once; raise :class:`ConditionError` on any problem."""
    if not isinstance(expression, str):
        raise ConditionError(repr(expression), "a condition must be a string")
    if len(expression) > MAX_LENGTH:
        reason = f"condition is {len(expression)} characters long; the limit is {MAX_LENGTH}"
        raise ConditionError(expression, reason)
    source = expression.lstrip()
    if not source:
        raise ConditionError(expression, "condition is empty")
    compiler = _Compiler(expression, len(expression) - len(source))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. invalid escape sequences become SyntaxErrors
            tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        if not exc.offset:  # the parser ran out of input: the mistake is at the end
            reason = f"syntax error: {exc.msg} (the condition ends too early)"
            raise ConditionError(expression, reason, len(expression.rstrip()) + 1) from None
        column = compiler.column(exc.lineno, exc.offset, in_bytes=False)
        raise ConditionError(expression, f"syntax error: {exc.msg}", column) from None
    except (ValueError, RecursionError, MemoryError, OverflowError, Warning) as exc:
        raise ConditionError(expression, f"cannot parse: {exc or type(exc).__name__}") from None
    fn = compiler.predicate(tree.body, 1)
    return Condition(expression, fn, tuple(dict.fromkeys(compiler.paths)))


class _Compiler:
    """Turns a checked AST into closures, collecting the paths it reads."""

    def __init__(self, expression: str, shift: int) -> None:
        self.expression = expression
        self.source = expression[shift:]
        self.shift = shift
        self.paths: list[str] = []

    def column(self, lineno: int | None, offset: int | None, in_bytes: bool) -> int | None:
        """1-based position in the whole expression of (line, offset) reported by the parser."""
        if not lineno or offset is None:
            return None
        starts = [0] + [m.end() for m in _NEWLINE.finditer(self.source)]
        if lineno > len(starts):
            return None
        line = self.source[starts[lineno - 1] :]
        if in_bytes:  # ast col_offset counts UTF-8 bytes
            offset = len(line.encode("utf-8")[:offset].decode("utf-8", "replace")) + 1
        return min(self.shift + starts[lineno - 1] + max(offset, 1), len(self.expression) + 1)

    def fail(self, node: ast.AST, reason: str, at_name: bool = False) -> ConditionError:
        """Build the error for ``node``; point at a call's '(' or, if ``at_name``, an attribute's name."""
        line, col = getattr(node, "lineno", None), getattr(node, "col_offset", None)
        if isinstance(node, ast.Call):
            line, col = node.func.end_lineno, node.func.end_col_offset
        elif at_name and isinstance(node, ast.Attribute) and node.end_col_offset is not None:
            line, col = node.end_lineno, node.end_col_offset - len(node.attr.encode("utf-8"))
        return ConditionError(self.expression, reason, self.column(line, col, in_bytes=True))

    def predicate(self, node: ast.expr, depth: int) -> Callable[[object], bool]:
        """Compile a node whose result is a bool: and/or/not, comparisons, truthiness."""
        if depth > MAX_DEPTH:
            raise self.fail(node, f"condition is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, ast.BoolOp):
            parts = tuple(self.predicate(v, depth + 1) for v in node.values)
            if len(parts) == 2:  # the common case, without a generator
                first, second = parts
                if isinstance(node.op, ast.And):
                    return lambda ctx: first(ctx) and second(ctx)
                return lambda ctx: first(ctx) or second(ctx)
            if isinstance(node.op, ast.And):
                return lambda ctx: all(part(ctx) for part in parts)
            return lambda ctx: any(part(ctx) for part in parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self.predicate(node.operand, depth + 1)
            return lambda ctx: not inner(ctx)
        if isinstance(node, ast.Compare):
            return self.compare(node, depth)
        value = self.value(node, depth)
        return lambda ctx: _truthy(value(ctx))

    def compare(self, node: ast.Compare, depth: int) -> Callable[[object], bool]:
        """Compile a (possibly chained) comparison; each operand is evaluated once."""
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
            if isinstance(op, ast.Is | ast.IsNot) and not (_is_singleton(left) or _is_singleton(right)):
                raise self.fail(right, "'is' / 'is not' only compare with None, True or False; use '=='")
        fns = tuple(self.value(o, depth + 1) for o in operands)
        ops = tuple(_Comparison(type(op)) for op in node.ops)
        if len(ops) == 1:
            (op,), (first, second) = ops, fns
            return lambda ctx: op(first(ctx), second(ctx))

        def chain(ctx: object) -> bool:
            left = fns[0](ctx)
            for op, fn in zip(ops, fns[1:], strict=True):
                right = fn(ctx)
                if not op(left, right):
                    return False
                left = right
            return True

        return chain

    def value(self, node: ast.expr, depth: int) -> _Fn:
        """Compile an operand: a literal, a display of literals or a ``context.`` path."""
        if depth > MAX_DEPTH:
            raise self.fail(node, f"condition is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, ast.Name | ast.Attribute | ast.Subscript):
            return self.path(node, depth)
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            items = [self.literal(e) for e in node.elts]
            kind = {ast.List: list, ast.Tuple: tuple, ast.Set: frozenset}[type(node)]
            display = kind(items)
            return lambda ctx: display
        if isinstance(node, ast.BoolOp | ast.Compare) or (
            isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)
        ):
            raise self.fail(node, "comparison operands must be a 'context.' path or a literal")
        constant = self.literal(node)
        return lambda ctx: constant

    def literal(self, node: ast.expr) -> Any:
        """Return the value of a scalar literal (signed numbers included) or reject the node."""
        if isinstance(node, ast.Constant) and isinstance(node.value, _SCALARS):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = node.operand
            if isinstance(inner, ast.Constant) and type(inner.value) in (int, float):
                return -inner.value if isinstance(node.op, ast.USub) else inner.value
            raise self.fail(node, "unary '-' and '+' only apply to number literals")
        if isinstance(node, ast.Constant):
            raise self.fail(node, f"{type(node.value).__name__} literals are not allowed")
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            raise self.fail(node, "list, tuple and set elements must be str/number/bool/None literals")
        if isinstance(node, ast.Name | ast.Attribute | ast.Subscript):
            raise self.fail(node, "list, tuple and set elements must be literals, not paths")
        raise self.fail(node, self.forbidden(node))

    def forbidden(self, node: ast.AST) -> str:
        if isinstance(node, ast.BinOp | ast.UnaryOp):
            return f"operator '{_SYMBOLS.get(type(node.op).__name__, '?')}' is not allowed"
        name = type(node).__name__
        return _FORBIDDEN.get(name, f"{name} expressions are not allowed")

    def path(self, node: ast.expr, depth: int) -> _Fn:
        """Compile ``context.root.a[0]['b']`` into a resolver of its steps."""
        steps: list[tuple[_Key, ast.expr]] = []
        while isinstance(node, ast.Attribute | ast.Subscript):
            if isinstance(node, ast.Attribute):
                if node.attr.startswith("_"):
                    raise self.fail(node, "names starting with '_' are not allowed", at_name=True)
                steps.append((node.attr, node))
            else:
                steps.append((self.key(node.slice), node))
            node = node.value
        if not isinstance(node, ast.Name):
            raise self.fail(node, self.forbidden(node))
        if node.id.startswith("_"):
            raise self.fail(node, "names starting with '_' are not allowed")
        if node.id != "context":
            raise self.fail(node, f"unknown name '{node.id}': conditions start with 'context.'")
        keys = tuple(key for key, _ in reversed(steps))
        if not keys or keys[0] not in ROOTS:
            shown = f"'context{_dotted(keys[:1])}' is" if keys else "'context' alone is"
            reason = f"{shown} not readable in a condition; use one of: {', '.join(ROOTS)}"
            raise self.fail(steps[-1][1] if steps else node, reason, at_name=True)
        if depth + len(keys) > MAX_DEPTH:
            raise self.fail(node, f"condition is nested more than {MAX_DEPTH} levels deep")
        self.paths.append(_dotted(keys)[1:])
        root, rest = str(keys[0]), keys[1:]
        return lambda ctx: _resolve(ctx, root, rest)

    def key(self, node: ast.expr) -> _Key:
        """Return a subscript key: a str or (signed) int literal."""
        if isinstance(node, ast.Slice):
            raise self.fail(node, _FORBIDDEN["Slice"])
        value = self.literal(node) if isinstance(node, ast.Constant | ast.UnaryOp) else None
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise self.fail(node, "subscripts must be a string or integer literal, e.g. [0] or ['key']")
        return value


def _resolve(context: object, root: str, keys: tuple[_Key, ...]) -> Any:
    """Read ``root`` from the context, then follow ``keys``; anything missing or failing gives None."""
    try:
        value = getattr(context, root, None)
        for key in keys:
            if value is None:
                return None
            kind = type(value)
            if kind is dict or (kind is not list and isinstance(value, Mapping)):
                value = value.get(key)  # type: ignore[union-attr]
            elif (kind is list or isinstance(value, list | tuple)) and type(key) is int:
                value = value[key] if -len(value) <= key < len(value) else None  # type: ignore[index,arg-type]
            elif type(key) is str and key[:1] != "_":
                value = getattr(value, key, None)
            else:
                return None
        return value
    except Exception:
        return None


def _dotted(keys: tuple[_Key, ...]) -> str:
    """Render keys as ``.name`` or ``[key]``, e.g. ``.initial_data.items[0]``."""
    return "".join(f".{k}" if isinstance(k, str) and k.isidentifier() and k[0] != "_" else f"[{k!r}]" for k in keys)


class _Failed(Exception):
    """Raised inside a compiled condition; :meth:`Condition.evaluate` adds the expression."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Comparison:
    """One comparison operator: failing on ``None`` (missing data) is False; any other failure is reported."""

    __slots__ = ("fn", "symbol")

    def __init__(self, kind: type[ast.cmpop]) -> None:
        self.fn = _COMPARE[kind]
        self.symbol = _COMPARE_SYMBOLS[kind]

    def __call__(self, left: Any, right: Any) -> bool:
        try:
            return bool(self.fn(left, right))
        except Exception as exc:
            if left is None or right is None:
                return False  # a value that is not there (yet) does not satisfy "> 3" nor contain anything
            shown = f"{_shown(left)} {self.symbol} {_shown(right)}"
            raise _Failed(f"{type(exc).__name__}: {exc} (evaluating {shown})") from exc


def _shown(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 40 else text[:39] + "\N{HORIZONTAL ELLIPSIS}"


def _truthy(value: Any) -> bool:
    try:
        return bool(value)
    except Exception as exc:
        raise _Failed(f"{type(exc).__name__}: {exc} (testing {_shown(value)} for truth)") from exc


def _is_singleton(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, bool))
