"""Branch and trigger conditions: a small, safe expression language checked at config load.

    csat <= 2            source == "store_qr"         "vip" in tags
    nps >= 9 and stage != "churned"                   not subscribed

Only names, literals, comparisons, `in`, `and`, `or`, `not` and lists are allowed; nothing is
executed but a walk of the parsed tree.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}


class Condition:
    def __init__(self, source: str, known_names: Iterable[str] | None = None):
        """`known_names`: the names it may use (checked at config load); None skips the check."""
        self.source = source
        try:
            tree = ast.parse(source, mode="eval")
        except SyntaxError as error:
            raise ValueError(f"condition {source!r} does not parse: {error.msg}") from None
        self._tree = tree.body
        self.names: set[str] = set()
        self._check(self._tree)
        if known_names is not None and (unknown := self.names - set(known_names)):
            raise ValueError(f"condition {source!r} uses unknown name(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(known_names))}")

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self._check(value)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            self._check(node.operand)
        elif isinstance(node, ast.Compare):
            if any(type(op) not in _COMPARE for op in node.ops):
                raise ValueError(f"condition {self.source!r} uses an unsupported comparison")
            for part in (node.left, *node.comparators):
                self._check(part)
        elif isinstance(node, ast.Name):
            self.names.add(node.id)
        elif isinstance(node, (ast.List, ast.Tuple)):
            for element in node.elts:
                self._check(element)
        elif isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
            pass
        else:
            raise ValueError(f"condition {self.source!r}: only names, literals, comparisons, "
                             "in, and, or, not are allowed")

    def evaluate(self, values: Mapping[str, Any]) -> bool:
        return bool(self._eval(self._tree, values))

    def _eval(self, node: ast.AST, values: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.BoolOp):
            results = (self._eval(v, values) for v in node.values)
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.UnaryOp):
            return not self._eval(node.operand, values)
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, values)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self._eval(right_node, values)
                try:
                    if not _COMPARE[type(op)](left, right):
                        return False
                except TypeError:  # e.g. an unanswered question (None) compared with a number
                    return False
                left = right
            return True
        if isinstance(node, ast.Name):
            return values.get(node.id)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self._eval(e, values) for e in node.elts]
        assert isinstance(node, ast.Constant)
        return node.value
