"""CEL for admission policies and CRD validation rules, on cel-python (`celpy`), with a cost bound.

Expressions are parsed once (`compile`) and kept with what they refer to: an expression naming a
variable the context does not declare (`undeclared reference to 'x'`) or that does not parse is
refused when the object holding it (a CRD, a ValidatingAdmissionPolicy) is written, as upstream's
compile step refuses it.

Cost: upstream bounds each evaluation by an estimated and a runtime cost. Here every evaluation
has a budget of interpreter steps (nodes of the expression visited, macro bodies once per element
they iterate): an expression that would run past it stops with upstream's `operation cancelled:
actual cost limit exceeded`, so that a rule over a large list can never hold the process. The
evaluator counts in `_Budgeted.visit`, the one place the tree interpreter visits every node.
Callers run evaluations off the event loop (the registry's offload worker), so even a full budget
costs the loop nothing but its share of the interpreter lock.

Kubernetes's CEL libraries are partly here: the standard functions of cel-python, plus the
string extensions rules most use (`lowerAscii`, `upperAscii`, `trim`, `split`, `join`,
`replace`, `indexOf`, `lastIndexOf`, `substring`) and the list functions `isSorted`, `sum`,
`min`, `max`; others are reported as undeclared when the rule is written.

cel-python (with lark and pendulum) costs some 6 MiB once imported: it is imported on the first
expression compiled, so a node that never uses CEL never pays for it. Where it is not installed
(armv7: its google-re2 has no wheel there) every expression is refused when written, naming why.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

log = logging.getLogger(__name__)

# The budget of one evaluation, in interpreter steps (nodes visited; upstream's PerCallLimit is
# 1e6 cost units, but a step here costs some 15 us on a fast core), and in time.
DEFAULT_BUDGET = 10_000
DEFAULT_SECONDS = 0.25
# The variables an admission expression may name (upstream's: params and variables only when
# the policy declares them; authorizer is not offered here).
ADMISSION_VARIABLES = frozenset({"object", "oldObject", "request", "namespaceObject"})
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_BUILTINS = frozenset({
    "int", "uint", "double", "string", "bytes", "bool", "list", "map", "type", "null_type", "dyn", "duration",
    "timestamp", "size", "has", "matches", "true", "false", "null",
})
_EXTENSIONS = frozenset({"lowerAscii", "upperAscii", "trim", "split", "join", "replace", "indexOf", "lastIndexOf",
                         "substring", "isSorted", "sum", "min", "max"})


class CostExceeded(Exception):
    pass


class EvalError(Exception):
    pass


class _Budget:
    def __init__(self, limit: int, seconds: float) -> None:
        self.left = limit
        self.deadline = time.monotonic() + seconds

    def spend(self) -> None:
        self.left -= 1
        # The clock is read every 64 steps: cel-python's own work between steps (copying
        # activations for macros) is not counted by steps alone.
        if self.left < 0 or (self.left & 63 == 0 and time.monotonic() > self.deadline):
            raise CostExceeded("operation cancelled: actual cost limit exceeded")


@dataclasses.dataclass(frozen=True)
class _Engine:
    """cel-python, imported on first use, and what edgekube adds to it."""

    environment: Any
    budgeted: Callable[..., Any]  # the budgeted evaluator class: (ast, activation, budget)
    to_cel: Callable[[Any], Any]
    parse_error: type[Exception]
    eval_error: type[Exception]
    bool_type: type
    string_type: type
    functions: dict[str, Callable[..., Any]]


def _engine() -> _Engine:
    try:
        return _load_engine()
    except ImportError as exc:  # armv7 builds: cel-python needs google-re2, which has no wheel there
        raise ValueError(f"CEL is not available in this build of edgekube ({exc})") from None


@functools.cache
def _load_engine() -> _Engine:
    import celpy  # see the module's docstring: loaded only once CEL is used
    from celpy import adapter, celparser, celtypes, evaluation

    class Budgeted(evaluation.Evaluator):
        """The tree interpreter, counting every node it enters against a shared budget."""

        def __init__(self, ast: Any, activation: Any, budget: _Budget) -> None:
            super().__init__(ast, activation)
            self.budget = budget

        def _visit_tree(self, tree: Any) -> Any:
            self.budget.spend()
            return super()._visit_tree(tree)

        def sub_evaluator(self, ast: Any) -> Any:
            return Budgeted(ast, self.activation, self.budget)

    def to_cel(value: Any) -> Any:
        if isinstance(value, bool):
            return celtypes.BoolType(value)
        if isinstance(value, int):
            return celtypes.IntType(value)
        if isinstance(value, str):
            return celtypes.StringType(value)
        if isinstance(value, list):
            return celtypes.ListType([to_cel(v) for v in value])
        return value

    def typed(fn: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *args: to_cel(fn(*args))

    functions: dict[str, Callable[..., Any]] = {
        "lowerAscii": typed(lambda s: str(s).lower()),
        "upperAscii": typed(lambda s: str(s).upper()),
        "trim": typed(lambda s: str(s).strip()),
        "split": typed(lambda s, sep, *n: str(s).split(str(sep), int(n[0]) - 1 if n and int(n[0]) > 0 else -1)),
        "join": typed(lambda items, sep="": str(sep).join(str(i) for i in items)),
        "replace": typed(lambda s, a, b, *n: str(s).replace(str(a), str(b), int(n[0]) if n else -1)),
        "indexOf": typed(lambda s, x: s.index(x) if x in s else -1),
        "lastIndexOf": typed(lambda s, x: s.rindex(x) if x in s else -1),
        "substring": typed(lambda s, a, b=None: _substring(str(s), int(a), None if b is None else int(b))),
        "isSorted": typed(lambda items: all(a <= b for a, b in zip(items, list(items)[1:], strict=False))),
        "sum": _sum,
        "min": lambda items: min(items),
        "max": lambda items: max(items),
    }
    assert set(functions) == _EXTENSIONS
    return _Engine(environment=celpy.Environment(), budgeted=Budgeted, to_cel=adapter.json_to_cel,
                   parse_error=celparser.CELParseError, eval_error=evaluation.CELEvalError,
                   bool_type=celtypes.BoolType, string_type=celtypes.StringType, functions=functions)


def _sum(items: Any) -> Any:
    total: Any = 0
    for i, item in enumerate(items):
        total = item if i == 0 else total + item
    return _engine().to_cel(total) if isinstance(total, int) else total


def _substring(s: str, start: int, end: int | None = None) -> str:
    if start < 0 or start > len(s) or (end is not None and (end < start or end > len(s))):
        raise ValueError("index out of range")
    return s[start:end]


@dataclasses.dataclass(frozen=True)
class Program:
    text: str
    ast: Any  # cel-python's parse tree
    runner: Any  # cel-python's Runner
    names: frozenset[str]  # the context variables it reads

    def evaluate(self, values: Mapping[str, Any], *, budget: int = DEFAULT_BUDGET,
                 seconds: float = DEFAULT_SECONDS) -> Any:
        """The expression's value for `values` (JSON-like, converted to CEL); raises EvalError
        or CostExceeded."""
        return self.run(values, budget=budget, seconds=seconds)[0]

    def run(self, values: Mapping[str, Any], *, budget: int = DEFAULT_BUDGET,
            seconds: float = DEFAULT_SECONDS) -> tuple[Any, int]:
        """`evaluate`, with the steps it took."""
        engine = _engine()
        spent = _Budget(budget, seconds)
        evaluator = engine.budgeted(self.ast, self.runner.new_activation(), spent)
        try:
            return evaluator.evaluate({k: engine.to_cel(v) for k, v in values.items()}), budget - spent.left
        except CostExceeded:
            raise
        except RecursionError:
            raise CostExceeded("operation cancelled: actual cost limit exceeded") from None
        except (TypeError, ValueError, KeyError, AttributeError, ZeroDivisionError) as exc:
            raise EvalError(str(exc) or type(exc).__name__) from None
        except engine.eval_error as exc:
            raise EvalError(_eval_message(exc)) from None


def _eval_message(exc: Exception) -> str:
    args = exc.args
    message = str(args[0]) if args else "evaluation error"
    if message.startswith(("no such member", "no such key")):
        key = message.rpartition(": ")[2].strip("'") if ": " in message else ""
        return f"no such key: {key}" if key else "no such key"
    return message


@functools.lru_cache(maxsize=1024)
def compile(text: str, *, variables: frozenset[str]) -> Program:
    """Parse `text`; raises ValueError with upstream-like messages (syntax errors, undeclared
    references)."""
    engine = _engine()
    try:
        ast = engine.environment.compile(text)
    except engine.parse_error as exc:
        raise ValueError(f"Syntax error: {str(exc).splitlines()[0] if str(exc) else 'invalid expression'}") from None
    names = _free_names(ast) - _BUILTINS - _EXTENSIONS
    unknown = sorted(names - variables)
    if unknown:
        raise ValueError(f"undeclared reference to '{unknown[0]}'")
    return Program(text, ast, engine.environment.program(ast, functions=cast(Any, engine.functions)), frozenset(names))


def compile_error(text: str, *, variables: frozenset[str]) -> str | None:
    try:
        compile(text, variables=variables)
    except ValueError as exc:
        return str(exc)
    return None


def _is_tree(node: Any) -> bool:
    return hasattr(node, "data") and hasattr(node, "children")


def _free_names(tree: Any) -> set[str]:
    """The identifiers an expression reads from its context (not bound by a macro)."""
    found: set[str] = set()
    _walk(tree, frozenset(), found)
    return found


def _walk(node: Any, bound: frozenset[str], found: set[str]) -> None:
    if not _is_tree(node):
        return
    if node.data == "member_dot_arg" and len(node.children) >= 3:
        target, method, args = node.children[0], node.children[1], node.children[2]
        if str(method) in _MACROS and _is_tree(args) and len(args.children) >= 2:
            _walk(target, bound, found)
            var = next((str(t) for t in _tokens(args.children[0])), "")
            for child in args.children[1:]:
                _walk(child, bound | {var}, found)
            return
    if node.data == "ident":
        name = next((str(t) for t in _tokens(node)), "")
        if name and name not in bound:
            found.add(name)
        return
    if node.data in ("ident_arg", "dot_ident_arg"):
        for child in node.children[1:]:
            _walk(child, bound, found)
        return
    for child in node.children:
        _walk(child, bound, found)


def _tokens(node: Any) -> Iterable[Any]:
    if _is_tree(node):
        for child in node.children:
            yield from _tokens(child)
    else:
        yield node


def truthy(value: Any) -> bool | None:
    """A validation's result: True, False, or None when it is not a bool."""
    if isinstance(value, bool | _engine().bool_type):
        return bool(value)
    return None


def as_text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | _engine().string_type) else None
