"""Reading a LibCST tree fast: its nodes, without rebuilding them.

``node.visit(visitor)`` rebuilds every node it passes (LibCST's visitors are transformers
underneath), which was most of what reading a file cost. Here:

- :func:`visit_batched` runs the rules' visitors over every node, in LibCST's own order;
- :func:`children` gives the analyses that only look for names and strings
  (:mod:`codemod.scopes`, the rules' ``_uses``) the children that hold them: whitespace,
  comments and punctuation are skipped.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Callable, Iterator, Sequence

import libcst as cst

#: Fields that hold only whitespace, comments or punctuation.
_SKIPPED = frozenset(
    {
        "leading_lines", "lines_after_decorators", "header", "footer", "lpar", "rpar", "comma",
        "semicolon", "colon", "equal", "dot", "lbracket", "rbracket", "lbrace", "rbrace",
        "operator", "trailing_whitespace", "newline", "asynchronous", "star", "star_tok",
        "default_indent", "default_newline", "has_trailing_newline", "encoding", "indent",
        "await_", "whitespace", "quote", "prefix", "start", "end", "value_kind",
    }
)
_FIELDS: dict[type, tuple[str, ...]] = {}


def child_fields(node_type: type) -> tuple[str, ...]:
    """The fields of ``node_type`` that may hold nodes other than whitespace, in declared order."""
    names = _FIELDS.get(node_type)
    if names is None:
        names = _FIELDS[node_type] = tuple(
            f.name for f in fields(node_type) if f.name not in _SKIPPED and not f.name.startswith("whitespace")
        )
    return names


def children(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The non-whitespace children of ``node``."""
    for name in child_fields(type(node)):
        value = getattr(node, name)
        if isinstance(value, cst.CSTNode):
            yield value
        elif isinstance(value, (tuple, list)):
            for item in value:
                if isinstance(item, cst.CSTNode):
                    yield item


class _FieldOrder(cst.CSTVisitor):
    """Records the order in which LibCST visits a node's fields (and nothing below them)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[str] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        return False

    def on_visit_attribute(self, node: cst.CSTNode, attribute: str) -> None:
        self.fields.append(attribute)


_ORDER: dict[object, tuple[str, ...]] = {}
#: Types whose nodes skip a field that is None (FormattedStringExpression's format_spec):
#: their order is learnt per pattern of None fields.
_CONDITIONAL: set[type] = set()


def visit_order(node: cst.CSTNode) -> tuple[str, ...]:
    """The fields of ``node`` in the order LibCST's own traversal visits them (source order),
    learnt from LibCST itself the first time a type (or a pattern of missing fields) is met."""
    kind = type(node)
    key: object = kind
    if kind in _CONDITIONAL:
        key = (kind, tuple(f.name for f in fields(node) if getattr(node, f.name) is None))
    order = _ORDER.get(key)
    if order is None:
        recorder = _FieldOrder()
        node._visit_and_replace_children(recorder)
        order = tuple(dict.fromkeys(recorder.fields))
        skipped = [f.name for f in fields(node) if getattr(node, f.name) is None and f.name not in order]
        if skipped and kind not in _CONDITIONAL:
            _CONDITIONAL.add(kind)
            return visit_order(node)
        _ORDER[key] = order
    return order


Callback = Callable[[cst.CSTNode], object]


def visit_batched(module: cst.Module, visitors: Sequence[cst.BatchableCSTVisitor]) -> dict[int, cst.CSTNode]:
    """Call every visitor's ``visit_*``/``leave_*`` (and ``visit_<Node>_<field>``) methods in
    the order LibCST's ``visit_batched`` does, without rebuilding the tree.

    Returns the parent of every node walked (by id), which the engine uses to find the
    statements around an edit or a finding.
    """
    methods: dict[str, list[Callback]] = {}
    for visitor in visitors:
        for name, method in visitor.get_visitors().items():
            methods.setdefault(name, []).append(method)
    plans: dict[type, tuple[list[Callback], list[tuple[str, list[Callback], list[Callback]]], list[Callback]]] = {}
    parents: dict[int, cst.CSTNode] = {}
    empty: list[Callback] = []

    def plan(node: cst.CSTNode) -> tuple[list[Callback], list[tuple[str, list[Callback], list[Callback]]], list[Callback]]:
        name = type(node).__name__
        fields = [
            (field, methods.get(f"visit_{name}_{field}", empty), methods.get(f"leave_{name}_{field}", empty))
            for field in visit_order(node)
        ]
        return methods.get(f"visit_{name}", empty), fields, methods.get(f"leave_{name}", empty)

    def walk(node: cst.CSTNode) -> None:
        steps = plans.get(type(node))
        if steps is None:
            steps = plans[type(node)] = plan(node)
        enter, fields, leave = steps
        for method in enter:
            method(node)
        for field, before, after in fields:
            for method in before:
                method(node)
            value = getattr(node, field)
            if isinstance(value, cst.CSTNode):
                parents[id(value)] = node
                walk(value)
            elif isinstance(value, (tuple, list)):
                for child in value:
                    if isinstance(child, cst.CSTNode):
                        parents[id(child)] = node
                        walk(child)
            for method in after:
                method(node)
        for method in leave:
            method(node)

    walk(module)
    return parents
