"""``migrate_source``: bytes in, one ``FileOutcome`` out. Pure, and never raises."""

from __future__ import annotations

import ast
import re
import sys
import traceback
from typing import Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper

from moe_migrate.codemod.context import FileContext
from moe_migrate.codemod.imports import add_from_import
from moe_migrate.codemod.outcomes import Changed, Failed, FileOutcome, Unchanged
from moe_migrate.codemod.rule import FileState, Rule


class _ApplyEdits(cst.CSTTransformer):
    """Applies scheduled edits bottom-up, so an edit sees its node's children already edited."""

    def __init__(self, state: FileState) -> None:
        super().__init__()
        self._edits = state.edits
        self.applied: set[str] = set()

    def on_leave(self, original_node, updated_node):  # type: ignore[no-untyped-def]
        entry = self._edits.get(id(original_node))
        if entry is None:
            return updated_node
        for rule_id, edit in entry[1]:
            updated_node = edit(updated_node)
            self.applied.add(rule_id)
            if isinstance(updated_node, (cst.RemovalSentinel, cst.FlattenSentinel)):
                break
        return updated_node


#: What CPython says when brackets nest deeper than it allows (200). LibCST's native parser is
#: not asked to parse such a file: it overflows its stack (a segfault) at about 1,500 levels.
_TOO_DEEP = ("too many nested parentheses", "too many levels of indentation", "too complex")
_PYTHON2 = re.compile(rb"^[ \t]*(print[ \t]+[^ \t(=]|exec[ \t]+[\"']|except[ \t]+\w[\w.]*[ \t]*,)", re.M)


def _located(error: SyntaxError) -> str:
    """``at line L, column C: message`` (as much of it as is known)."""
    where = f" at line {error.lineno}" if error.lineno else ""
    if error.lineno and error.offset:
        where += f", column {error.offset}"
    return f"{where.strip()}: {str(error.msg).rstrip('.')}" if where else str(error.msg).rstrip(".")


def _check_python(source: bytes, path: str) -> Failed | SyntaxError | None:
    """CPython's own parser first: fast, and it refuses what would crash LibCST's.

    Returns ``Failed`` for what must not reach LibCST (nesting deeper than Python allows, NUL
    bytes, undecodable bytes), the ``SyntaxError`` for LibCST to confirm (it also knows newer
    syntax than the running Python), or ``None`` when the file parses.
    """
    try:
        compile(source, path, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except (RecursionError, MemoryError):
        return Failed(path, "parse", f"too deeply nested: Python {sys.version_info[0]}.{sys.version_info[1]} itself cannot parse it. Simplify the file, or pass --exclude for it.")
    except ValueError as error:  # NUL bytes (SyntaxError from 3.12 on)
        return Failed(path, "parse", f"cannot parse: {error} (a NUL byte: is it a binary file?). Pass --exclude for it.")
    except SyntaxError as error:
        text = str(error.msg)
        if "null bytes" in text:
            return Failed(path, "parse", f"cannot parse: {text} (a NUL byte: is it a binary file?). Pass --exclude for it.")
        if any(marker in text for marker in _TOO_DEEP):
            return Failed(path, "parse", f"too deeply nested {_located(error)}. Simplify the file, or pass --exclude for it.")
        if "unicode error" in text or "encoding" in text or "decode" in text:
            return Failed(path, "parse", f"cannot decode {_located(error)}. Fix the bytes or the coding declaration, or pass --exclude for it.")
        return error
    return None


def _parse(source: bytes, path: str) -> cst.Module | Failed:
    checked = _check_python(source, path)
    if isinstance(checked, Failed):
        return checked
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as error:
        if checked is not None:  # both parsers agree; CPython's message is the one people know
            detail = _located(checked)
        else:
            # The native parser's own "error at L:C" is more precise than raw_line/raw_column.
            where = re.search(r"error at (\d+):(\d+): ", error.message)
            line, column = (int(where[1]), int(where[2]) + 1) if where else (error.raw_line, error.raw_column + 1)
            message = error.message[where.end() :] if where else error.message
            detail = f"at line {line}, column {column}: {message.rstrip('.')}"
        hint = " It looks like Python 2, which moe-migrate does not migrate." if _PYTHON2.search(source) else ""
        return Failed(path, "parse", f"syntax error {detail}.{hint} Fix the file, or pass --exclude for it.")
    except (UnicodeError, LookupError, SyntaxError, ValueError) as error:
        # LookupError: an unknown coding declaration; ValueError: e.g. NUL bytes.
        return Failed(path, "parse", f"cannot decode: {error}. Fix the bytes or the coding declaration, or pass --exclude for it.")
    except RecursionError:
        return Failed(path, "parse", "too deeply nested to parse. Simplify the file, or pass --exclude for it.")


def _verify(source: bytes, after: bytes, original: cst.Module, path: str) -> Failed | None:
    """Refuse a rewrite that would not parse or that would touch bytes outside its edits."""
    from moe_migrate.codemod.write import unparsable

    if original.bytes != source:
        # LibCST could not reproduce this file exactly (a lone CR at the end, say): a rewrite
        # would change bytes nobody asked to change.
        return Failed(path, "parse", "cannot rewrite without changing other bytes of the file (LibCST does not round-trip it; unusual line endings?). Migrate it by hand, or pass --exclude for it.")
    try:
        cst.parse_module(after)
    except Exception as error:  # noqa: BLE001 - any failure to re-parse is a refusal
        return Failed(path, "rule", f"internal error: the rewritten file does not parse ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); nothing was rewritten. Please report it with this file.")
    problem = unparsable(source, after)
    if problem is not None:
        return Failed(path, "rule", f"internal error: the rewritten file does not parse ({problem}); nothing was rewritten. Please report it with this file.")
    return None


def migrate_source(
    source: bytes, rules: Sequence[type[Rule]], context: FileContext
) -> FileOutcome:
    """Run ``rules`` over ``source`` in one pass and say what they would do.

    Never raises: a parse error is ``Failed(stage="parse")``, a crash inside a rule or the edit
    pass is ``Failed(stage="rule")`` with the traceback. Bytes are kept exactly outside the
    edited nodes (encoding, BOM, newlines, comments); ``Changed`` only when they differ.
    """
    path = context.path
    active = [rule for rule in rules if rule.applies_to(context)]
    if not active:
        return Unchanged(path)
    parsed = _parse(source, path)
    if isinstance(parsed, Failed):
        return parsed
    try:
        wrapper = MetadataWrapper(parsed, unsafe_skip_copy=True)
        state = FileState(context=context, wrapper=wrapper)
        wrapper.visit_batched([rule(state) for rule in active])
        findings = tuple(sorted(state.findings))
        if not state.edits:
            return Unchanged(path, findings)
        applier = _ApplyEdits(state)
        module = wrapper.module.visit(applier)
        for from_module, name, asname in state.imports:
            module = add_from_import(module, from_module, name, asname)
        after = module.bytes
    except RecursionError:
        return Failed(
            path,
            "rule",
            "too deeply nested to migrate (Python's recursion limit was reached). "
            "Migrate it by hand, or pass --exclude for it.",
            traceback.format_exc(),
        )
    except Exception as error:  # noqa: BLE001 - a rule crash must not take down the run
        return Failed(
            path,
            "rule",
            f"internal error while migrating ({type(error).__name__}: {error}); "
            "please report it with this file",
            traceback.format_exc(),
        )
    if after == source:
        return Unchanged(path, findings)
    refused = _verify(source, after, parsed, path)
    if refused is not None:
        return refused
    return Changed(path, source, after, tuple(sorted(applier.applied)), findings)
