"""Reading a LibCST tree fast: the children of a node, without rebuilding it.

``node.visit(visitor)`` rebuilds every node it passes (LibCST's visitors are transformers
underneath), which is most of what an analysis pass costs. The analyses that only read the
tree (:mod:`codemod.scopes`, the rules' ``_uses``) walk it with :func:`children` instead.
Whitespace, comments and punctuation are never walked: no name or string lives in them.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Iterator

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
