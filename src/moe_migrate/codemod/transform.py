"""``migrate_source``: bytes in, one ``FileOutcome`` out. Pure, and never raises."""

from __future__ import annotations

import re
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


def _parse(source: bytes, path: str) -> cst.Module | Failed:
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as error:
        # The native parser's own "error at L:C" is more precise than raw_line/raw_column.
        where = re.search(r"error at (\d+):(\d+): ", error.message)
        line, column = (int(where[1]), int(where[2]) + 1) if where else (error.raw_line, error.raw_column + 1)
        detail = error.message[where.end() :] if where else error.message
        return Failed(
            path,
            "parse",
            f"syntax error at line {line}, column {column}: {detail}. "
            "Fix the file, or pass --exclude for it.",
        )
    except (UnicodeError, LookupError, SyntaxError, ValueError) as error:
        # LookupError: an unknown coding declaration; ValueError: e.g. NUL bytes.
        return Failed(path, "parse", f"cannot decode: {error}. Fix the file, or pass --exclude for it.")


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
    return Changed(path, source, after, tuple(sorted(applier.applied)), findings)
