"""Adding a ``from M import name`` to a module the way a careful person would.

Merged into an existing top-level ``from M import ...`` when there is one (in isort order if
its names were sorted, keeping a parenthesised block's one-name-per-line style), otherwise a
new statement placed in isort order among the module's other imports of the same top-level
package. Never a duplicate. Pure: a Module in, a Module out.
"""

from __future__ import annotations

from typing import Sequence

import libcst as cst
from libcst.helpers import get_full_name_for_node


def isort_key(name: str) -> tuple[int, str]:
    """ruff/isort's default order of names in a from-import: CONSTANTS, Classes, functions."""
    kind = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
    return (kind, name)


def _from_module(statement: cst.BaseSmallStatement) -> str | None:
    if isinstance(statement, cst.ImportFrom) and not statement.relative and statement.module:
        return get_full_name_for_node(statement.module)
    if isinstance(statement, cst.Import):
        return get_full_name_for_node(statement.names[0].name)
    return None


def _alias(name: str, asname: str | None) -> cst.ImportAlias:
    return cst.ImportAlias(
        name=cst.Name(name), asname=cst.AsName(name=cst.Name(asname)) if asname else None
    )


def _binds(statement: cst.ImportFrom, name: str, asname: str | None) -> bool:
    if isinstance(statement.names, cst.ImportStar):
        return False
    for alias in statement.names:
        alias_as = get_full_name_for_node(alias.asname.name) if alias.asname else None
        if get_full_name_for_node(alias.name) == name and alias_as == asname:
            return True
    return False


def insert_alias(statement: cst.ImportFrom, name: str, asname: str | None = None) -> cst.ImportFrom:
    """``statement`` with ``name [as asname]`` added, in the statement's own style."""
    assert not isinstance(statement.names, cst.ImportStar)
    names = list(statement.names)
    spelled = [get_full_name_for_node(a.name) or "" for a in names]
    at = len(names)
    if spelled == sorted(spelled, key=isort_key):
        at = next((i for i, s in enumerate(spelled) if isort_key(s) > isort_key(name)), len(names))
    lpar = statement.lpar
    multiline = any(_breaks(a.comma) for a in names) or (
        lpar is not None and isinstance(lpar.whitespace_after, cst.ParenthesizedWhitespace)
    )
    if multiline:
        inner = [a.comma for a in names[:-1] if _breaks(a.comma)]
        between = inner[0] if inner else cst.Comma(whitespace_after=lpar.whitespace_after)  # type: ignore[union-attr]
    else:
        between = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
    new = _alias(name, asname)
    if at == len(names):
        # The new name ends the list and takes the old last comma (trailing, or none).
        new = new.with_changes(comma=names[-1].comma)
        names[-1] = names[-1].with_changes(comma=between)
    else:
        new = new.with_changes(comma=between)
    names.insert(at, new)
    return statement.with_changes(names=names)


def _breaks(comma: object) -> bool:
    return isinstance(getattr(comma, "whitespace_after", None), cst.ParenthesizedWhitespace)


def _is_header(statement: cst.BaseStatement) -> bool:
    """Imports, docstrings and ``__future__`` lines at the top of a module."""
    if not isinstance(statement, cst.SimpleStatementLine):
        return False
    return all(
        isinstance(s, (cst.Import, cst.ImportFrom))
        or (isinstance(s, cst.Expr) and isinstance(s.value, (cst.SimpleString, cst.ConcatenatedString)))
        for s in statement.body
    )


def add_from_import(module: cst.Module, from_module: str, name: str, asname: str | None = None) -> cst.Module:
    """``module`` with ``from from_module import name [as asname]`` available at top level."""
    body = list(module.body)
    header_end = 0
    while header_end < len(body) and _is_header(body[header_end]):
        header_end += 1
    for index, line in enumerate(body[:header_end]):
        for small in line.body:  # type: ignore[union-attr]
            if isinstance(small, cst.ImportFrom) and _from_module(small) == from_module:
                if _binds(small, name, asname):
                    return module
                if isinstance(small.names, cst.ImportStar):
                    continue
                new_line = line.with_deep_changes(small, names=insert_alias(small, name, asname).names)  # type: ignore[arg-type]
                body[index] = new_line
                return module.with_changes(body=body)
    statement = cst.SimpleStatementLine(
        body=[cst.ImportFrom(module=dotted(from_module), names=[_alias(name, asname)])]
    )
    return module.with_changes(body=_insert_sorted(body, header_end, statement, from_module))


def _insert_sorted(
    body: list[cst.BaseStatement], header_end: int, statement: cst.SimpleStatementLine, from_module: str
) -> Sequence[cst.BaseStatement]:
    package = from_module.split(".")[0]
    imports = [
        (i, _from_module(line.body[0]))  # type: ignore[union-attr]
        for i, line in enumerate(body[:header_end])
        if isinstance(line.body[0], (cst.Import, cst.ImportFrom))  # type: ignore[union-attr]
    ]
    same = [(i, m) for i, m in imports if m and m.split(".")[0] == package]
    after = [i for i, m in same if (m or "") > from_module]
    if after:
        at = after[0]
        # The new line takes the blank lines and comments that stood above its successor.
        statement = statement.with_changes(leading_lines=body[at].leading_lines)
        body[at] = body[at].with_changes(leading_lines=())
        return [*body[:at], statement, *body[at:]]
    if same:
        at = same[-1][0] + 1
    elif imports:
        at = imports[-1][0] + 1
        statement = statement.with_changes(leading_lines=(cst.EmptyLine(),))
    else:
        # The module's first import: set apart from the code after it, as pycodestyle wants
        # (two blank lines before a top-level def or class, one before other code).
        at = header_end
        if at < len(body):
            body[at] = _after_imports(body[at])
    return [*body[:at], statement, *body[at:]]


def _after_imports(statement: cst.BaseStatement) -> cst.BaseStatement:
    """``statement`` with the blank lines above it that the first code after imports needs."""
    wanted = 2 if isinstance(statement, (cst.FunctionDef, cst.ClassDef)) else 1
    lines = statement.leading_lines
    blank = next((i for i, line in enumerate(lines) if line.comment is not None), len(lines))
    missing = max(0, wanted - blank)
    return statement.with_changes(leading_lines=(*(cst.EmptyLine() for _ in range(missing)), *lines))


def dotted(name: str) -> cst.Attribute | cst.Name:
    """A ``Name``/``Attribute`` node for a dotted string."""
    node: cst.Attribute | cst.Name | None = None
    for part in name.split("."):
        node = cst.Name(part) if node is None else cst.Attribute(value=node, attr=cst.Name(part))
    assert node is not None
    return node
